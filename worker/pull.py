"""The machine's side of the pool protocol (docs/pool.md): pull for work, heartbeat a
held task, and the answers they carry, over plain HTTP with the machine token.

It only talks and parses; what to do with an answer is worker.pool's. Errors have names:
`PoolRejectedError` (401, 404, any other 4xx: pulling again cannot help) and
`PoolUnavailableError` (network, timeout, 408/429/5xx, a body that is not the
protocol's: worth retrying). The machine token never appears in an error message.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from worker.exceptions import PoolRejectedError, PoolUnavailableError
from worker.settings import PoolSettings

RETRYABLE = {408, 425, 429}
DEFAULT_HEARTBEAT_MS = 10_000


@dataclass(frozen=True)
class PullAnswer:
    """One pull's answer: `task` (with `task` and `heartbeat_interval_ms`), `wait`
    (`retry_after_ms`) or `exit` (`reason`); any of them may carry `pull_url`, where a
    standing machine pulls next (its batch's route, docs/pool.md "Standing pool")."""

    action: str
    task: dict = field(default_factory=dict, repr=False)
    heartbeat_interval_ms: int = DEFAULT_HEARTBEAT_MS
    retry_after_ms: int = 0
    reason: str = ""
    pull_url: str = ""


def parse_pull(data: object) -> PullAnswer:
    """The protocol's pull answer, checked; `PoolUnavailableError` for anything else
    (a half-deployed orchestrator answering garbage is worth waiting out)."""
    if not isinstance(data, dict):
        raise PoolUnavailableError("pull answer is not a JSON object")
    answer = _parse_action(data)
    pull_url = data.get("pull_url")
    if isinstance(pull_url, str) and pull_url:
        answer = replace(answer, pull_url=pull_url)
    return answer


def _parse_action(data: dict) -> PullAnswer:
    action = data.get("action")
    if action == "task":
        task = data.get("task")
        if not isinstance(task, dict) or not task.get("task_id") or not task.get("callback_url"):
            raise PoolUnavailableError("pull answer 'task' lacks task_id or callback_url")
        interval = _positive_int(data.get("heartbeat_interval_ms"), DEFAULT_HEARTBEAT_MS)
        return PullAnswer("task", task=task, heartbeat_interval_ms=interval)
    if action == "wait":
        return PullAnswer("wait", retry_after_ms=_positive_int(data.get("retry_after_ms"), 1000))
    if action == "exit":
        return PullAnswer("exit", reason=str(data.get("reason") or ""))
    raise PoolUnavailableError(f"pull answer has an unknown action {str(action)[:40]!r}")


def _positive_int(value: object, default: int) -> int:
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return number if number > 0 else default


def backoff_delays(base_s: float, max_s: float, give_up_s: float) -> Iterator[float]:
    """The sleeps between failed pulls: base, 2x base, ... capped at max_s, for as long
    as their sum stays within give_up_s (1, 2, 4, 8, 10, 10, 10, 10: 55 s of 60)."""
    total, delay = 0.0, base_s
    while total + delay <= give_up_s:
        yield delay
        total += delay
        delay = min(max_s, delay * 2)


class PoolClient:
    """HTTP to the orchestrator's pool routes, `Authorization: Bearer MACHINE_TOKEN`."""

    def __init__(self, settings: PoolSettings):
        self.settings = settings
        # a standing machine starts at its machine-scoped route and moves to the batch's
        # route its first answer names; the slots share it (a str swap is atomic)
        self.pull_url = f"{settings.pool_url}/pull"

    @property
    def heartbeat_url(self) -> str:
        """Where heartbeats go when an assignment does not say (docs/pool.md)."""
        return f"{self.settings.pool_url}/heartbeat"

    def pull(self) -> PullAnswer:
        answer = parse_pull(self._post(self.pull_url, {}))
        if answer.pull_url and self._own(answer.pull_url):
            self.pull_url = answer.pull_url
        return answer

    def _own(self, url: str) -> bool:
        """The token goes to ORCHESTRATOR_URL only: a `pull_url` elsewhere (an orchestrator
        behind a proxy names its own address) is not followed, and the machine goes on
        pulling where it did, which serves the same batch; the answer itself (perhaps a
        task already claimed for it) is still worked."""
        return url.startswith(self.settings.orchestrator_url + "/")

    def heartbeat(self, url: str, task_id: str, attempt: int, timeout_s: float | None = None) -> str:
        """One beat; returns the action (`continue` or `drop`)."""
        body = {"task_id": task_id, "attempt": attempt}
        data = self._post(url or self.heartbeat_url, body, timeout_s)
        action = data.get("action") if isinstance(data, dict) else None
        if action not in ("continue", "drop"):
            raise PoolUnavailableError(f"heartbeat answer has an unknown action {str(action)[:40]!r}")
        return action

    def _post(self, url: str, body: dict, timeout_s: float | None = None) -> object:
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "arke-tiff-worker",
                "Authorization": f"Bearer {self.settings.machine_token}",
            },
        )
        try:
            timeout = timeout_s or self.settings.request_timeout_s
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            status = f"{exc.code} {exc.reason}"
            if exc.code >= 500 or exc.code in RETRYABLE:
                raise PoolUnavailableError(status) from None
            raise PoolRejectedError(exc.code, status) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PoolUnavailableError(f"{type(reason).__name__}: {reason}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise PoolUnavailableError("answer is not JSON") from None


def pull_with_retry(
    client: PoolClient,
    on_retry: Callable[[str, float], None],
    sleep: Callable[[float], None] = time.sleep,
) -> PullAnswer:
    """Pull until an answer comes, sleeping `backoff_delays` between failures; raises the
    last `PoolUnavailableError` once they are used up, `PoolRejectedError` at once."""
    settings = client.settings
    delays = backoff_delays(settings.pull_backoff_s, settings.pull_backoff_max_s,
                            settings.pull_give_up_s)  # fmt: skip
    while True:
        try:
            return client.pull()
        except PoolUnavailableError as exc:
            delay = next(delays, None)
            if delay is None:
                raise
            on_retry(str(exc), delay)
            sleep(delay)
