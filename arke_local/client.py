"""A small client of the orchestrator's HTTP API (contracts §4, docs/interfaces.md).

Only speaks HTTP; it decides nothing. Errors carry the status and the answer's text.
"""

from __future__ import annotations

from urllib.parse import quote

import requests


class ApiError(RuntimeError):
    def __init__(self, status: int, text: str, url: str):
        super().__init__(f"{status} from {url}: {text[:300]}")
        self.status = status
        self.text = text
        self.url = url


class OrchestratorClient:
    def __init__(self, base_url: str, timeout_s: float = 10.0, session: requests.Session | None = None,
                 admin_token: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        self._admin_token = admin_token

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _call(self, method: str, path: str, **kw) -> dict:
        url = self._url(path)
        resp = self.session.request(method, url, timeout=self.timeout_s, **kw)
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, resp.text, url)
        return resp.json() if resp.content else {}

    def health(self) -> dict:
        return self._call("GET", "/health")

    def status(self, batch_id: str) -> dict:
        return self._call("GET", f"/status/{quote(batch_id, safe='')}")

    def tasks_page(self, batch_id: str, status: str | None = None, limit: int = 100, next_token: str | None = None) -> dict:
        params: dict[str, object] = {"limit": limit}
        if status:
            params["status"] = status
        if next_token:
            params["next"] = next_token
        return self._call("GET", f"/status/{quote(batch_id, safe='')}/tasks", params=params)

    def tasks(self, batch_id: str, status: str | None = None, limit: int = 100) -> list[dict]:
        """Every task (of one status), following the `next` tokens."""
        out: list[dict] = []
        token = None
        while True:
            page = self.tasks_page(batch_id, status, limit, token)
            out.extend(page.get("tasks", []))
            token = page.get("next")
            if not token:
                return out

    def admin(self, action: str, batch_id: str) -> dict:
        """POST /admin/{reset|retry|redeliver}/{batch} with the admin token."""
        headers = {"Authorization": f"Bearer {self._admin_token}"} if self._admin_token else {}
        return self._call("POST", f"/admin/{action}/{quote(batch_id, safe='')}", headers=headers)

    def reset(self, batch_id: str) -> dict:
        return self.admin("reset", batch_id)

    def test(self, message: dict) -> dict:
        return self._call("POST", "/test", json=message)
