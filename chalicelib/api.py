"""The HTTP API's logic (contracts §4), apart from Chalice: plain inputs in, (status, body) out.

`app.py` only adapts requests to these functions, so they are tested without a server and
the answers, including every error's shape, are decided in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import admin, callbacks, intake, listing, signing, store
from .clock import iso, now_ms
from .errors import (
    ConflictError,
    InvalidCallbackError,
    InvalidMessageError,
    NotFoundError,
    UnauthorizedError,
)
from .ids import id_problem
from .logs import log
from .messages import parse_body
from .models import Batch
from .pool import machine_api
from .services import Services
from .timeline import timeline_json
from .views import TASK_STATUSES, batch_status, task_json

SERVICE = "arke-preprocessing-orchestrator"
MAX_PAGE = 500
Answer = tuple[int, dict[str, Any]]


def error(status: int, message: str) -> Answer:
    return status, {"error": message}


def health(services: Services) -> Answer:
    """contracts §4, plus whether unsigned callbacks are accepted (a weaker mode to notice)."""
    return 200, {"status": "ok", "service": SERVICE, "timestamp": iso(now_ms()),
                 "unsigned_callbacks_accepted": services.settings.accept_unsigned_callbacks}


def _batch_or_error(batch_id: str) -> Batch | Answer:
    """The batch a read route is about, or its 400 (bad id) or 404 (unknown) answer."""
    problem = id_problem(batch_id, "batchId")
    if problem:
        return error(400, problem)
    batch = store.get_batch(batch_id)
    if batch is None:
        return error(404, f"batch {batch_id} not found")
    return batch


def status(batch_id: str) -> Answer:
    batch = _batch_or_error(batch_id)
    return batch if isinstance(batch, tuple) else (200, batch_status(batch))


def tasks(batch_id: str, query: dict[str, str]) -> Answer:
    problem = id_problem(batch_id, "batchId")
    if problem:
        return error(400, problem)
    wanted = query.get("status") or None
    if wanted is not None and wanted not in TASK_STATUSES:
        return error(400, f"status must be one of {', '.join(TASK_STATUSES)}")
    limit = _limit(query, 50, MAX_PAGE)
    if limit is None:
        return error(400, f"limit must be an integer from 1 to {MAX_PAGE}")
    if store.get_batch(batch_id, with_counts=False) is None:
        return error(404, f"batch {batch_id} not found")
    try:
        items, token = store.tasks_page(batch_id, wanted, limit, query.get("next") or None)
    except ValueError as exc:
        return error(400, str(exc))
    return 200, {"batch_id": batch_id, "tasks": [task_json(t) for t in items], "next": token}


def _limit(query: dict[str, str], default: int, maximum: int) -> int | None:
    """`?limit=` as an integer from 1 to `maximum`, or None when it is anything else."""
    raw = query.get("limit", str(default))
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 4 or not 1 <= int(raw) <= maximum:
        return None
    return int(raw)


def batches(query: dict[str, str]) -> Answer:
    """GET /batches: the active batches (first page only) and a page of recent ones."""
    limit = _limit(query, 20, listing.MAX_LIMIT)
    if limit is None:
        return error(400, f"limit must be an integer from 1 to {listing.MAX_LIMIT}")
    token = query.get("next") or None
    try:
        recent, next_token = listing.recent_page(limit, token)
    except ValueError as exc:
        return error(400, str(exc))
    active = [] if token else listing.active_batches()
    return 200, {"active": [batch_status(b) for b in active], "recent": [batch_status(b) for b in recent],
                 "next": next_token}


def timeline(batch_id: str) -> Answer:
    """GET /status/{batchId}/timeline: tasks finished per minute, the rate and the ETA."""
    batch = _batch_or_error(batch_id)
    return batch if isinstance(batch, tuple) else (200, timeline_json(batch, now_ms()))


def callback(services: Services, batch_id: str, task_id: str, raw: bytes | None,
             query: dict[str, str], headers: Mapping[str, str]) -> Answer:
    if raw is not None and len(raw) > callbacks.MAX_BODY_BYTES:
        log("[Callback]", "rejected", batch_id=batch_id, task_id=task_id, reason="body over 1 MB")
        return error(413, "callback body is larger than 1 MB")
    try:
        result = callbacks.handle_callback(services, batch_id, task_id, raw, query.get("attempt"),
                                           headers.get("authorization"), query.get("spawned"),
                                           query.get("machine"))
    except UnauthorizedError as exc:
        log("[Callback]", "unauthorized", batch_id=batch_id[:128], task_id=task_id[:128], reason=str(exc))
        return error(401, str(exc))
    except InvalidCallbackError as exc:
        log("[Callback]", "rejected", batch_id=batch_id[:128], task_id=task_id[:128], reason=str(exc))
        return error(400, str(exc))
    except NotFoundError as exc:
        log("[Callback]", "unknown", batch_id=batch_id, task_id=task_id, reason=str(exc))
        return error(404, str(exc))
    body: dict[str, Any] = {"ok": True}
    if not result.counted:
        body.update(ignored=True, detail=result.detail)
    return 200, body


def pool_request(services: Services, kind: str, batch_id: str | None, machine_name: str, raw: bytes | None,
                 headers: Mapping[str, str]) -> Answer:
    """POST /pool/{batchId}/machines/{name}/pull|heartbeat, and a standing machine's
    POST /pool/machines/{name}/pull (`batch_id` None) (docs/pool.md)."""
    authorization = headers.get("authorization")
    try:
        if batch_id is None:
            return 200, machine_api.pull_standing(services, machine_name, authorization)
        if kind == "pull":
            return 200, machine_api.pull(services, batch_id, machine_name, authorization)
        return 200, machine_api.heartbeat(services, batch_id, machine_name, raw, authorization)
    except UnauthorizedError as exc:
        log("[Pool]", "unauthorized", batch_id=(batch_id or "-")[:128], machine_name=machine_name[:128], request=kind)
        return error(401, str(exc))
    except InvalidCallbackError as exc:
        return error(400, str(exc))
    except NotFoundError as exc:
        return error(404, str(exc))


def admin_denied(services: Services, headers: Mapping[str, str]) -> Answer | None:
    """Admin routes need the admin token: `Authorization: Bearer <ADMIN_TOKEN>` or
    `X-Admin-Token`. 401 without one, 403 with a wrong one (constant-time comparison)."""
    presented = signing.bearer(headers.get("authorization")) or headers.get("x-admin-token") or None
    if presented is None:
        return error(401, "admin routes need Authorization: Bearer <ADMIN_TOKEN>")
    if not signing.same_secret(services.secrets().get("ADMIN_TOKEN", ""), presented):
        log("[HTTP]", "admin_forbidden")
        return error(403, "that is not the admin token")
    return None


def admin_action(services: Services, action: str, batch_id: str, headers: Mapping[str, str]) -> Answer:
    """POST /admin/{reset,retry,redeliver}/{batchId}."""
    denied = admin_denied(services, headers)
    if denied:
        return denied
    problem = id_problem(batch_id, "batchId")
    if problem:
        return error(400, problem)
    try:
        if action == "reset":
            return 200, {"ok": True, "message": "Batch reset", **admin.reset_batch(services, batch_id)}
        if action == "retry":
            return 200, {"ok": True, "message": "Failed tasks retried", **admin.retry_batch(services, batch_id)}
        return 200, {"ok": True, "message": "Final callback redelivery started",
                     **admin.redeliver_batch(services, batch_id)}
    except NotFoundError as exc:
        return error(404, str(exc))
    except ConflictError as exc:
        return error(409, str(exc))


def test_batch(services: Services, raw: bytes | None) -> Answer:
    """POST /test: start a batch as if its message came from the queue (dev and local only)."""
    if not services.settings.test_route_enabled:
        return error(404, "not found")
    try:
        message = parse_body(raw or b"")
        outcome = intake.handle_body(services, raw or b"", message_id="http-test")
    except InvalidMessageError as exc:
        return error(400, str(exc))
    return 200, {"ok": True, "batch_id": message.get("batch_id"), "result": outcome}
