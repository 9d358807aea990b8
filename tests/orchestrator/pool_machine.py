"""A pool machine played through the routes, as the worker's loop speaks to them (docs/pool.md)."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

from chalice.test import Client

from chalicelib import store


class PlayedMachine:
    def __init__(self, client: Client, request: dict[str, Any]) -> None:
        self.client = client
        self.request = request
        self.env = request["body"]["config"]["env"]
        self.name, self.token = self.env["MACHINE_NAME"], self.env["MACHINE_TOKEN"]
        # a standing machine's env names no batch: it is the one its record says it was started for
        self.batch_id = self.env.get("BATCH_ID") or (store.get_standing(self.name).batch or "")

    def _post(self, kind: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token or self.token}"}
        path = f"/pool/{self.batch_id}/machines/{self.name}/{kind}"
        return self.client.http.post(path, headers=headers, body=json.dumps(body or {}))

    def pull(self, token: str | None = None) -> dict[str, Any]:
        response = self._post("pull", token=token)
        assert response.status_code == 200, response.body
        return response.json_body

    def pull_task(self, tries: int = 50) -> dict[str, Any]:
        """Pull until given a task, sleeping the `wait`s (a retry may not be due yet)."""
        for _ in range(tries):
            answer = self.pull()
            if answer["action"] == "task":
                return answer["task"]
            assert answer["action"] == "wait", answer
            time.sleep(answer["retry_after_ms"] / 1000)
        raise AssertionError("never given a task")

    def heartbeat(self, task: dict[str, Any]) -> dict[str, Any]:
        response = self._post("heartbeat", {"task_id": task["task_id"], "attempt": task["attempt"]})
        assert response.status_code == 200, response.body
        return response.json_body

    def report(self, task: dict[str, Any], ok: bool = True, error: str = "boom",
               error_code: str | None = None, url: str | None = None, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"task_id": task["task_id"], "batch_id": task["batch_id"]}
        if ok:
            key = task["output_r2_key"]
            body.update(status="success", output_r2_key=key, output_file_name=key.rsplit("/", 1)[-1],
                        output_file_size=123, performance={"total_time_ms": 3000, "download_time_ms": 1,
                                                           "conversion_time_ms": 2, "upload_time_ms": 1})
        else:
            body.update(status="error", error=error, **({"error_code": error_code} if error_code else {}))
        body.update(extra)
        parts = urlsplit(url or task["callback_url"])
        response = self.client.http.post(f"{parts.path}?{parts.query}", body=json.dumps(body),
                                         headers={"Content-Type": "application/json",
                                                  "Authorization": f"Bearer {task['callback_token']}"})
        assert response.status_code == 200, response.body
        return response.json_body

    def work_until_exit(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Pull, report success, pull again, until told to exit; the tasks it ran."""
        done = []
        for _ in range(limit):
            answer = self.pull()
            if answer["action"] == "exit":
                return done
            if answer["action"] == "task":
                self.report(answer["task"])
                done.append(answer["task"])
        raise AssertionError("the machine was never told to exit")
