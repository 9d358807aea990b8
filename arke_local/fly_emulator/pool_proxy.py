"""The orchestrator proxy's deciding half, for pool processes (`WORKER_MODE=pool` on a real
command): a pool process's `ORCHESTRATOR_URL` is `{emulator}/_emulator/orchestrator/{machine_id}`;
what it POSTs there goes on to the original URL. This module says which kind of request a
path is, and rewrites a task assignment's `callback_url` / `heartbeat_url` so those come
through the proxy too (where the callback faults and the task faults apply).

Pure: no HTTP, no machines (the server forwards, the supervisor strikes).
"""

from __future__ import annotations

import re

PULL = "pull"
HEARTBEAT = "heartbeat"
CALLBACK = "callback"
OTHER = "other"
_PULL = re.compile(r"^pool/([^/]+/)?machines/[^/]+/pull$")  # a standing machine's first pull has no batch
_HEARTBEAT = re.compile(r"^pool/[^/]+/machines/[^/]+/heartbeat$")
_CALLBACK = re.compile(r"^callback/[^/]+/[^/]+$")
REWRITTEN = ("callback_url", "heartbeat_url")


def route_kind(rest: str) -> str:
    """`rest` is the path after the orchestrator's base URL, without a leading slash."""
    if _PULL.match(rest):
        return PULL
    if _HEARTBEAT.match(rest):
        return HEARTBEAT
    if _CALLBACK.match(rest):
        return CALLBACK
    return OTHER


def proxied_base(emulator_url: str, machine_id: str) -> str:
    return f"{emulator_url}/_emulator/orchestrator/{machine_id}"


def rewrite_pull_url(answer: object, original: str, proxied: str) -> None:
    """A standing machine's pull answer names its next pull's URL (`pull_url`): pointed here
    too, so its later pulls come through the proxy as its first did."""
    if not isinstance(answer, dict):
        return
    url = answer.get("pull_url")
    if isinstance(url, str) and original and url.startswith(original + "/"):
        answer["pull_url"] = proxied + url[len(original):]


def rewrite_task(answer: object, original: str, proxied: str) -> bool:
    """In a pull answer with a task, point the task's URLs that start with the orchestrator's
    `original` base at `proxied`; True when `answer` is a task assignment. Other URLs
    (elsewhere than the orchestrator) are left alone."""
    if not isinstance(answer, dict) or answer.get("action") != "task":
        return False
    task = answer.get("task")
    if not isinstance(task, dict):
        return False
    for name in REWRITTEN:
        url = task.get(name)
        if isinstance(url, str) and (url == original or url.startswith(original + "/")):
            task[name] = proxied + url[len(original):]
    return True
