"""The Chalice app: routes, the SQS intake and the scheduled tick. Thin on purpose:
every decision lives in chalicelib/, this file only adapts Lambda and HTTP to it."""

from __future__ import annotations

from typing import Any

from chalice import Chalice, Rate, Response

from chalicelib import api, scheduler
from chalicelib import intake as intake_logic
from chalicelib.logs import log
from chalicelib.services import get_services
from chalicelib.settings import get_settings

app = Chalice(app_name="arke-preprocessing-orchestrator")


def _answer(answer: api.Answer) -> Response:
    status, body = answer
    return Response(body=body, status_code=status, headers=dict(api.CORS_HEADERS))


def _query() -> dict[str, str]:
    return dict(app.current_request.query_params or {})


def _headers() -> dict[str, str]:
    return {k.lower(): v for k, v in (app.current_request.headers or {}).items()}


def _is_preflight() -> bool:
    return app.current_request.method == "OPTIONS"


def _preflight() -> Response:
    return Response(body={}, status_code=200, headers=dict(api.CORS_HEADERS))


@app.route("/", methods=["OPTIONS"])
def root_preflight() -> Response:
    return _preflight()


@app.route("/health", methods=["GET", "OPTIONS"])
def health() -> Response:
    return _preflight() if _is_preflight() else _answer(api.health(get_services()))


@app.route("/status/{batch_id}", methods=["GET", "OPTIONS"])
def status(batch_id: str) -> Response:
    return _preflight() if _is_preflight() else _answer(api.status(batch_id))


@app.route("/status/{batch_id}/tasks", methods=["GET", "OPTIONS"])
def tasks(batch_id: str) -> Response:
    return _preflight() if _is_preflight() else _answer(api.tasks(batch_id, _query()))


@app.route("/callback/{batch_id}/{task_id}", methods=["POST", "OPTIONS"])
def callback(batch_id: str, task_id: str) -> Response:
    if _is_preflight():
        return _preflight()
    raw = app.current_request.raw_body
    return _answer(api.callback(get_services(), batch_id, task_id, raw, _query(), _headers()))


@app.route("/admin/{action}/{batch_id}", methods=["POST", "OPTIONS"])
def admin(action: str, batch_id: str) -> Response:
    """reset, retry and redeliver; anything else is 404 like an unknown route."""
    if action not in ("reset", "retry", "redeliver"):
        return _answer(api.error(404, f"no admin action {action}"))
    if _is_preflight():
        return _preflight()
    return _answer(api.admin_action(get_services(), action, batch_id, _headers()))


@app.route("/test", methods=["POST", "OPTIONS"])
def test() -> Response:
    if _is_preflight():
        return _preflight()
    return _answer(api.test_batch(get_services(), app.current_request.raw_body))


@app.on_sqs_message(queue=get_settings().queue_name, batch_size=1)
def intake(event: Any) -> None:
    """One message per invocation; an exception makes SQS retry it, then dead-letter it."""
    services = get_services()
    for record in event:
        message_id = record.to_dict().get("messageId")
        intake_logic.handle_body(services, record.body, message_id)


@app.schedule(Rate(1, unit=Rate.MINUTES))
def tick(event: Any) -> None:
    """Loops passes until near the timeout (see chalicelib/scheduler.py for why)."""
    context = event.context
    scheduler.run_tick(get_services(), context.get_remaining_time_in_millis)


def _log_cold_start() -> None:
    settings = get_settings()
    log("[HTTP]", "cold_start", stage=settings.stage, fly=settings.fly_api_hostname)


_log_cold_start()
