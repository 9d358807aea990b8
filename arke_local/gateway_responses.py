"""`chalice local` answering unknown paths the way the deployed stage does.

API Gateway answers a path with no route before Lambda runs; on a deployed stage the
gateway responses of infra/resources.json (merged into the API's definition) make that the
contract's 404 `{"error": ...}` with CORS. `chalice local` imitates bare API Gateway
instead (403 `{"message": "Missing Authentication Token"}`, no CORS). This reads the same
gateway response from infra/resources.json and has `chalice local` answer with it, so the
local and the deployed stage cannot drift apart. Only the local server is changed; app.py
installs it only under the Chalice CLI (`AWS_CHALICE_CLI_MODE`), never in Lambda.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

INFRA = Path(__file__).resolve().parents[1] / "infra" / "resources.json"
RESPONSES_KEY = "x-amazon-apigateway-gateway-responses"
NO_ROUTE = "MISSING_AUTHENTICATION_TOKEN"
HEADER_PREFIX = "gatewayresponse.header."


def gateway_responses(path: Path = INFRA) -> dict[str, dict[str, Any]]:
    """The gateway responses the deployed API gets, by response type."""
    template = json.loads(path.read_text())
    body = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    return body[RESPONSES_KEY]


def render(response: dict[str, Any], request_id: str, message: str) -> dict[str, Any]:
    """One gateway response as chalice local's handler expects a Lambda proxy answer.
    Only the two `$context` variables the templates use are filled in."""
    headers = {name[len(HEADER_PREFIX):]: value.strip("'")
               for name, value in response.get("responseParameters", {}).items()
               if name.startswith(HEADER_PREFIX)}
    headers["Content-Type"] = "application/json"
    body = response["responseTemplates"]["application/json"]
    body = body.replace("$context.requestId", request_id)
    body = body.replace("$context.error.messageString", json.dumps(message))
    return {"statusCode": int(response["statusCode"]), "headers": headers,
            "multiValueHeaders": {}, "body": body}


LISTEN_BACKLOG = 1024


def install_in_chalice_local(path: Path = INFRA) -> None:
    """Wrap chalice local's gateway: its "no such route" answer becomes ours. Our app has
    no authorizers, so every ForbiddenError the local gateway raises is that answer."""
    from chalice import local

    original = local.LocalGateway.handle_request
    if getattr(original, "arke_gateway_responses", False):
        return
    no_route = gateway_responses(path)[NO_ROUTE]

    def handle_request(self: Any, method: str, path: str, headers: Any, body: Any) -> Any:
        try:
            return original(self, method, path, headers, body)
        except local.ForbiddenError:
            return render(no_route, str(uuid.uuid4()), "Missing Authentication Token")

    handle_request.arke_gateway_responses = True  # type: ignore[attr-defined]
    local.LocalGateway.handle_request = handle_request
    # A pool of ~230 machines opens connections in bursts; the library's listen backlog of 5
    # turns a burst into 1 s SYN retries (measured against the emulator's server).
    local.ThreadedHTTPServer.request_queue_size = LISTEN_BACKLOG
