"""The Chalice app: routes, the SQS intake and the scheduled tick. Thin on purpose:
every decision lives in chalicelib/, this file only adapts Lambda and HTTP to it."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from chalice import Chalice, Rate, Response

from chalicelib import api, console, responses, scheduler
from chalicelib import intake as intake_logic
from chalicelib.logs import log
from chalicelib.services import get_services
from chalicelib.settings import get_settings

app = Chalice(app_name="arke-preprocessing-orchestrator")
app.register_middleware(responses.contract_middleware, "http")
if os.environ.get("AWS_CHALICE_CLI_MODE"):  # `chalice local`/`package`; never set in Lambda
    from arke_local.gateway_responses import install_in_chalice_local

    install_in_chalice_local()


def _answer(answer: api.Answer) -> Response:
    status, body = answer
    return Response(body=body, status_code=status, headers=dict(responses.CORS_HEADERS))


def _query() -> dict[str, str]:
    return dict(app.current_request.query_params or {})


def _headers() -> dict[str, str]:
    return {k.lower(): v for k, v in (app.current_request.headers or {}).items()}


def _route(path: str, *methods: str) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """A route that takes every method and any Content-Type (chalicelib/responses.py says
    why): OPTIONS is the CORS preflight, a method outside `methods` is the contract's 405."""
    def register(view: Callable[..., Response]) -> Callable[..., Response]:
        @functools.wraps(view)
        def handle(**params: str) -> Response:
            method = app.current_request.method
            if method == "OPTIONS":
                return Response(body={}, status_code=200, headers=dict(responses.CORS_HEADERS))
            if method not in methods:
                return responses.method_not_allowed(method, methods)
            return view(**params)
        return app.route(path, methods=responses.ANY_METHOD,
                         content_types=responses.ANY_CONTENT_TYPE)(handle)
    return register


@_route("/", *responses.ANY_METHOD)
def root() -> Response:
    """Only the preflight: any other method on `/` is the 404 of a path with no route."""
    return _answer(api.error(404, "no such route"))


@_route("/health", "GET")
def health() -> Response:
    return _answer(api.health(get_services()))


@_route("/status/{batch_id}", "GET")
def status(batch_id: str) -> Response:
    return _answer(api.status(batch_id))


@_route("/status/{batch_id}/tasks", "GET")
def tasks(batch_id: str) -> Response:
    return _answer(api.tasks(batch_id, _query()))


@_route("/status/{batch_id}/timeline", "GET")
def timeline(batch_id: str) -> Response:
    return _answer(api.timeline(batch_id))


@_route("/batches", "GET")
def batches() -> Response:
    return _answer(api.batches(_query()))


@_route("/console", "GET")
def console_page() -> Response:
    """The batch console (chalicelib/console.html): HTML, the one answer that is not JSON."""
    return Response(body=console.page(), status_code=200, headers=dict(console.HEADERS))


@_route("/callback/{batch_id}/{task_id}", "POST")
def callback(batch_id: str, task_id: str) -> Response:
    raw = app.current_request.raw_body
    return _answer(api.callback(get_services(), batch_id, task_id, raw, _query(), _headers()))


@_route("/pool/{batch_id}/machines/{machine_name}/{kind}", "POST")
def pool(batch_id: str, machine_name: str, kind: str) -> Response:
    """A pool machine's pull and heartbeat (docs/pool.md); anything else is 404."""
    if kind not in ("pull", "heartbeat"):
        return _answer(api.error(404, "no such route"))
    request = app.current_request
    return _answer(api.pool_request(get_services(), kind, batch_id, machine_name, request.raw_body, _headers()))


@_route("/pool/machines/{machine_name}/pull", "POST")
def pool_standing(machine_name: str) -> Response:
    """A standing pool machine's first pull after its start (docs/pool.md "Standing pool")."""
    request = app.current_request
    return _answer(api.pool_request(get_services(), "pull", None, machine_name, request.raw_body, _headers()))


@_route("/admin/{action}/{batch_id}", "POST")
def admin(action: str, batch_id: str) -> Response:
    """reset, retry and redeliver; anything else is 404 like an unknown route."""
    if action not in ("reset", "retry", "redeliver"):
        return _answer(api.error(404, f"no admin action {action}"))
    return _answer(api.admin_action(get_services(), action, batch_id, _headers()))


@_route("/test", "POST")
def test() -> Response:
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
