"""The callback proxy's forwarding half: send the worker's callback on to where the
orchestrator asked for it, with the same body and headers.

Never decides faults (the server asks the FaultInjector) and never touches machines.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

# Headers that belong to one hop, not to the message.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length",
})
# Loopback only: never go through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CallbackForwardError(Exception):
    """The original callback URL could not be reached."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str


def forward(url: str, body: bytes, headers: Iterable[tuple[str, str]],
            timeout: float = 30.0) -> Answer:
    """POST `body` to `url` with the end-to-end `headers`; any HTTP status is an Answer."""
    request = urllib.request.Request(url, data=body, method="POST")
    for name, value in headers:
        if name.lower() not in HOP_BY_HOP:
            request.add_header(name, value)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return Answer(response.status, response.read(),
                          response.headers.get("Content-Type", "application/json"))
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read(), exc.headers.get("Content-Type", "application/json"))
    except (urllib.error.URLError, OSError) as exc:
        raise CallbackForwardError(str(exc)) from exc


def describe(url: str) -> str:
    """The URL without its query (which may carry a token), for logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
