"""The HTTP envelope of contracts §4 for answers our views do not write themselves.

Chalice answers some requests on its own, in its own shape (`{"Code": ..., "Message": ...}`,
no CORS): a method a route does not take (405), a Content-Type a route does not list (415),
a view that raised (500). `contract_answer` is the one middleware that turns every such
answer into `{"error": ...}` with the CORS headers, and a crash into
`{"error": "internal error", "request_id"}` with the same id in its `[HTTP]` log line (the
traceback is logged by Chalice just before it). What API Gateway answers before Lambda runs
(no such route) is the gateway responses' job (infra/resources.json). Never put a secret or
an exception's text in an answer: only the request id ties the client's error to the log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chalice import Response

from .logs import log

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Admin-Token",
}
# Every route takes every method, so a wrong one reaches the app (API Gateway would answer a
# method it was not told about with 403 "Missing Authentication Token") and gets a real 405.
ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# A JSON body is read as JSON whatever its Content-Type says (the first `curl -d` sends
# application/x-www-form-urlencoded); Chalice's 415 never fires.
ANY_CONTENT_TYPE = ["*/*"]
INTERNAL_ERROR = "internal error"


def error_response(status: int, message: str, **extra: Any) -> Response:
    return Response(body={"error": message, **extra}, status_code=status, headers=dict(CORS_HEADERS))


def method_not_allowed(method: str, allowed: tuple[str, ...]) -> Response:
    response = error_response(405, f"method {method} is not allowed here; use {', '.join(allowed)}")
    response.headers["Allow"] = ", ".join((*allowed, "OPTIONS"))
    return response


def _chalice_error(response: Response) -> str | None:
    """The message of an answer Chalice wrote itself, or None for one of ours."""
    body = response.body
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    if isinstance(body, dict) and "Code" in body and "error" not in body:
        return str(body.get("Message") or body["Code"])
    return None


def request_id(request: Any) -> str:
    """The id the client is shown: the request's own Lambda request id (API Gateway's when
    there is none). Read from the request, not the app: chalice local serves requests on
    threads, and an id taken from the app could be another request's."""
    rid = getattr(getattr(request, "lambda_context", None), "aws_request_id", None)
    if not rid and request is not None:
        rid = (getattr(request, "context", None) or {}).get("requestId")
    return str(rid or "unknown")


def contract_answer(request: Any, response: Response) -> Response:
    """`response` in the contract's shape, with CORS; a 500 logged under its request id."""
    if response.status_code >= 500:
        rid = request_id(request)
        context = getattr(request, "context", None) or {}
        log("[HTTP]", "internal_error", request_id=rid, method=getattr(request, "method", None),
            route=getattr(request, "path", None), path=context.get("path"), status=response.status_code)
        return error_response(500, INTERNAL_ERROR, request_id=rid)
    message = _chalice_error(response)
    if message is None:
        for name, value in CORS_HEADERS.items():
            response.headers.setdefault(name, value)
        return response
    fixed = error_response(response.status_code, message)
    if "Allow" in response.headers:
        fixed.headers["Allow"] = response.headers["Allow"]
    return fixed


def contract_middleware(event: Any, get_response: Callable[[Any], Response]) -> Response:
    """The Chalice `http` middleware: every answer through `contract_answer`."""
    try:
        response = get_response(event)
    except Exception:  # noqa: BLE001 - what Chalice lets through (ChaliceUnhandledError)
        response = Response(body={"Code": "InternalServerError"}, status_code=500)
    return contract_answer(event, response)
