"""moto in server mode for the local stack, with DynamoDB requests serialized.

moto's DynamoDB backend takes no lock: under concurrent requests two conditional writes
(or two TransactWriteItems) on the same item can both pass their conditions, and `ADD`
counters can lose updates. Real DynamoDB never does that, and the orchestrator's
exactly-once design (conditional transactions) relies on it. This launcher wraps every
DynamoDB request in one lock, which makes the emulated table linearizable; the other
services (SQS long polls, S3, SSM) stay concurrent.

It makes moto's TransactWriteItems cost what DynamoDB's does: moto deep-copies every
table a transaction touches (once per item) so it can roll back, an O(table) cost per
transaction that turns a 10,000-task batch quadratic. Here a transaction backs up only the
items it touches and restores those on rollback.

And it makes a query of a local secondary index read its partition only, not the table.

Under a pool's load the one lock makes the server's own cost per request the stack's limit,
so it trims what is not DynamoDB: a successful data-plane result of plain JSON is written
with `json.dumps` rather than by moto's serializer, which walks the botocore shape for every
value (`ARKE_MOTO_CHECK_FAST_JSON=1` writes both and fails on a difference: the tests' mode);
a DynamoDB request goes to its app at once; an UpdateExpression is parsed once; moto's list
of its modules is made once; and no line is logged per request.

It also refuses requests signed for another region than the stack's (us-east-1): moto keeps
one set of resources per region, so `aws --region eu-west-1 dynamodb scan ...` would
otherwise find nothing, or a table "not found", and say nothing about why. The answer is a
400 `WrongRegion` in the service's own error format, naming both regions. (S3 requests
signed for `auto`, R2's region name, pass.)

It counts the DynamoDB requests it serves, by the access key that signed them and the
operation, and answers `GET /_arke/dynamodb-requests` with those counts: the benchmarks
measure the orchestrator's requests per task at the server, across all its processes (the
API, the pump), while their own reads go under another access key. Everything else is
`moto.server`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import heapq
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from arke_local.endpoints import REGION

_DYNAMODB_LOCK = threading.RLock()
_REQUEST_COUNTS: Counter[tuple[str, str]] = Counter()  # (access key, operation) -> requests
REQUEST_COUNTS_PATH = "/_arke/dynamodb-requests"
CHECK_FAST_JSON_ENV = "ARKE_MOTO_CHECK_FAST_JSON"  # "1": write DynamoDB results both ways, fail on a difference
NO_TRIMS_ENV = "ARKE_MOTO_NO_TRIMS"  # "1": none of `trim_per_request_costs` (bench/moto_server.py's baseline)
# SigV4 credential scope: AKID/DATE/REGION/SERVICE/aws4_request (header or presigned query).
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/,\s]+)/([^/,\s]+)/aws4_request")
_SIGNER = re.compile(r"Credential=([^/,\s]+)/")


def serialize_dynamodb() -> None:
    """Make moto's DynamoDB handle one request at a time (idempotent)."""
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action
    if getattr(original, "_arke_serialized", False):
        return

    @functools.wraps(original)
    def call_action(self):
        with _DYNAMODB_LOCK:
            _REQUEST_COUNTS[(signer(self.headers.get("Authorization", "")), self._get_action() or "?")] += 1
            return original(self)

    call_action._arke_serialized = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action
    _back_up_touched_items_only()
    _query_local_index_by_partition()


def _touched(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[str, dict, dict | None]]:
    """(table, key, the item as it is now or None) for every item of a transaction."""
    backups = []
    for entry in transact_items:
        _, op = next(iter(entry.items()))
        try:
            table = backend.get_table(op["TableName"])
            key = op.get("Key")
            if key is None:
                attrs = op["Item"]
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            current = backend.get_item(op["TableName"], key)
        except Exception:  # noqa: BLE001 - moto itself will reject this item
            continue
        backups.append((op["TableName"], key, copy.deepcopy(current.to_json()["Attributes"]) if current else None))
    return backups


def _restore(backend: Any, backups: list[tuple[str, dict, dict | None]]) -> None:
    for table_name, key, attrs in reversed(backups):
        if attrs is None:
            with contextlib.suppress(Exception):  # it was never written
                backend.delete_item(table_name, key)
        else:
            backend.put_item(table_name, attrs)


def _back_up_touched_items_only() -> None:
    """Replace moto's whole-table deep copies by item-level backups (idempotent). Safe
    because every DynamoDB request runs under the one lock above."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    original = DynamoDBBackend.transact_write_items
    if getattr(original, "_arke_item_backups", False):
        return

    @functools.wraps(original)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        backups = _touched(self, transact_items)
        Table.__deepcopy__ = lambda table, memo: table  # moto's own backup: a no-op
        try:
            original(self, transact_items)
        except Exception:
            _restore(self, backups)
            raise
        finally:
            del Table.__deepcopy__

    transact_write_items._arke_item_backups = True  # type: ignore[attr-defined]
    DynamoDBBackend.transact_write_items = transact_write_items


FAST_JSON_OPERATIONS = frozenset({
    "BatchGetItem", "BatchWriteItem", "DeleteItem", "GetItem", "PutItem", "Query", "Scan",
    "TransactGetItems", "TransactWriteItems", "UpdateItem"})
JSON_CONTENT_TYPE = "application/x-amz-json-1.0"  # DynamoDB's protocol (JSON 1.0)


def _plain(value: Any) -> bool:
    """JSON as it is, which moto's serializer would write unchanged: dicts, lists, strings,
    numbers, booleans. Not bytes: binary attribute values are the serializer's to base64."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, str | bool | int | float)


def _fast_json(result: Any, operation: Any) -> str | None:
    """The response body of a successful data-plane DynamoDB call, or None to leave it to
    moto. moto's serializer walks the botocore output shape for every value (a fifth of the
    server's time under a pool's load); a DynamoDB result whose top-level keys are the
    shape's own members (it writes only those) and whose values are plain JSON comes out of
    it unchanged."""
    if operation.name not in FAST_JSON_OPERATIONS or not isinstance(result, dict):
        return None
    members = operation.output_shape.members if operation.output_shape is not None else {}
    result = {key: value for key, value in result.items() if key in members}
    if None in result.values() or not _plain(result):
        return None
    return json.dumps(result)


def _serialize_dynamodb_json_fast(check: bool = False) -> None:
    """Write plain DynamoDB results with `json.dumps` (`_fast_json`) (idempotent). With
    `check`, write both ways and fail on any difference (the test suite's mode)."""
    from moto.core.responses import ActionResult

    original = ActionResult.execute_result
    if getattr(original, "_arke_fast_json", False):
        return

    @functools.wraps(original)
    def execute_result(self: Any, context: Any) -> Any:
        body = None
        if context.service_model.service_name == "dynamodb" and not isinstance(self.result, Exception):
            body = _fast_json(self.result, context.operation_model)
        if body is None:
            return original(self, context)
        headers = {"Content-Type": JSON_CONTENT_TYPE}
        if check:
            slow = original(self, context)
            if slow[:2] != (200, headers) or json.loads(slow[2]) != json.loads(body):
                raise AssertionError(f"fast JSON differs for {context.operation_model.name}: {body} != {slow}")
        return 200, headers, body

    execute_result._arke_fast_json = True  # type: ignore[attr-defined]
    ActionResult.execute_result = execute_result


def _parse_update_expressions_once() -> None:
    """moto parses an UpdateExpression anew for every write (a sixth of the server's time
    under a pool's load), though the orchestrator sends a few dozen distinct ones. The parse
    depends on the string alone, and moto never changes the tree it gets back: its validator
    works on a deep copy. So a string's tree is kept and handed out again (idempotent)."""
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    original = UpdateExpressionParser.make
    if getattr(original, "_arke_once", False):
        return
    parse = functools.lru_cache(maxsize=1024)(original)

    def make(expression: str) -> Any:
        return parse(expression)

    make._arke_once = True  # type: ignore[attr-defined]
    make.cache_info = parse.cache_info  # type: ignore[attr-defined]
    make.cache_clear = parse.cache_clear  # type: ignore[attr-defined]
    UpdateExpressionParser.make = staticmethod(make)  # type: ignore[method-assign,assignment]


def _list_moto_modules_once() -> None:
    """moto lists its own package directory for every request it routes by host (4% of the
    server's time under load); the list does not change while it runs (idempotent)."""
    from moto import backends

    original = backends.list_of_moto_modules
    if getattr(original, "_arke_once", False):
        return
    modules = tuple(original())

    def list_of_moto_modules() -> tuple[str, ...]:
        return modules

    list_of_moto_modules._arke_once = True  # type: ignore[attr-defined]
    backends.list_of_moto_modules = list_of_moto_modules


def _route_dynamodb_at_once() -> None:
    """moto finds each request's service by trying every service's URL and header rules (13%
    of the server's time under a pool's load); a DynamoDB request names its API in
    `X-Amz-Target`, so after the first one its app is known (idempotent)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.get_application
    if getattr(original, "_arke_dynamodb_route", False):
        return
    known: dict[str, Any] = {}

    @functools.wraps(original)
    def get_application(self: Any, environ: dict) -> Any:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return original(self, environ)
        app = known.get("dynamodb")
        if app is None:
            app = known["dynamodb"] = original(self, environ)
        return app

    get_application._arke_dynamodb_route = True  # type: ignore[attr-defined]
    DomainDispatcherApplication.get_application = get_application


def _query_local_index_by_partition() -> None:
    """A query of a local secondary index reads only its partition (idempotent). moto reads
    and sorts every item of the table for any index query, an O(table) cost real DynamoDB
    does not have: a pool's pulls query the open-index of a 10,000-task batch dozens of times
    a second. A local index's items are the partition's items, so its query may start from
    those alone; moto's own filtering, sorting and paging then run unchanged."""
    from moto.dynamodb.models.table import Table

    original = Table.query
    if getattr(original, "_arke_by_partition", False):
        return

    @functools.wraps(original)
    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
        index = next((i for i in self.indexes if i.name == index_name), None) if index_name else None
        conditions = kwargs.get("hash_key_conditions") or []
        value = hash_key if hash_key is not None else next(
            (v for name, v in conditions if name == self.hash_key_attr), None)
        if index is None or not self.range_key_attr or value is None or "all_items" in vars(self):
            return original(self, hash_key, *args, **kwargs)
        candidates = _first_in_index(self, index, value, args, kwargs)
        self.all_items = lambda: candidates
        try:
            return original(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    query._arke_by_partition = True  # type: ignore[attr-defined]
    Table.query = query


def _first_in_index(table: Any, index: Any, partition_key: Any, args: tuple, kwargs: dict) -> list[Any]:
    """The partition's items in the index's order; when nothing but the range condition can
    drop an item (no start key, no filter), only the first `limit` + 1 of those that meet it
    (the one more tells moto there is a next page)."""
    items = list(table.items.get(partition_key, {}).values())
    range_attr = next((k["AttributeName"] for k in index.schema if k["KeyType"] == "RANGE"), None)
    comparison, objects, limit, start, forward = (args + (None,) * 5)[:5] if len(args) >= 5 else (
        None, None, None, None, True)
    from moto.dynamodb.comparisons import OpDefault  # moto's "no filter"

    query_filter = kwargs.get("filter_expression", args[8] if len(args) > 8 else None)
    filtered = query_filter is not None and not isinstance(query_filter, OpDefault)
    if range_attr is None or start is not None or filtered or not limit:
        return sorted(items, key=lambda item: item.range_key)
    keyed = [item for item in items if range_attr in item.attrs
             and (not comparison or item.attrs[range_attr].compare(comparison, objects))]
    pick = heapq.nsmallest if forward is not False else heapq.nlargest
    return pick(int(limit) + 1, keyed, key=lambda item: (item.attrs[range_attr].cast_value, item.range_key))


def signer(authorization: str) -> str:
    """The access key id of a SigV4 `Authorization` header ("" when unsigned)."""
    match = _SIGNER.search(authorization)
    return match.group(1) if match else ""


def signed_scope(environ: dict) -> tuple[str, str] | None:
    """(region, service) a request was signed for, or None when it is unsigned."""
    match = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if match:
        return match.group(1), match.group(2)
    credential = parse_qs(environ.get("QUERY_STRING", "")).get("X-Amz-Credential", [""])[0]
    parts = credential.split("/")
    return (parts[2], parts[3]) if len(parts) == 5 else None


def wrong_region(environ: dict, region: str = REGION) -> str | None:
    """The other region a request was signed for, or None when it may pass."""
    scope = signed_scope(environ)
    if scope is None:
        return None
    asked, service = scope
    if asked == region or (service == "s3" and asked == "auto"):
        return None
    return asked


def region_error(environ: dict, asked: str, region: str = REGION) -> tuple[str, list, bytes]:
    """A 400 the AWS CLI and boto3 show as `WrongRegion: ...`, in the protocol's format."""
    message = (f"this local stack keeps its resources in region {region}, but the request was "
               f"signed for {asked}: use --region {region} (or AWS_DEFAULT_REGION={region})")
    scope = signed_scope(environ)
    if "json" in environ.get("CONTENT_TYPE", ""):
        body = json.dumps({"__type": "WrongRegion", "message": message}).encode()
        return "400 Bad Request", [("Content-Type", "application/x-amz-json-1.0"),
                                   ("x-amzn-query-error", "WrongRegion;Sender")], body
    xml = f"<Code>WrongRegion</Code><Message>{escape(message)}</Message>"
    if not (scope and scope[1] == "s3"):  # query protocol wraps the error
        xml = f"<ErrorResponse><Error>{xml}</Error></ErrorResponse>"
    else:
        xml = f"<Error>{xml}</Error>"
    return "400 Bad Request", [("Content-Type", "application/xml")], xml.encode()


def require_region(region: str = REGION) -> None:
    """Make moto's server answer `region_error` to requests signed for another region."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.__call__
    if getattr(original, "_arke_region", None) is not None:
        return

    @functools.wraps(original)
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        asked = wrong_region(environ, region)
        if asked is None:
            return original(self, environ, start_response)
        status, headers, body = region_error(environ, asked, region)
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]

    __call__._arke_region = region  # type: ignore[attr-defined]
    DomainDispatcherApplication.__call__ = __call__


def request_counts() -> dict[str, dict[str, int]]:
    """{access key: {operation: requests}} of every DynamoDB request served so far."""
    with _DYNAMODB_LOCK:
        counts: dict[str, dict[str, int]] = {}
        for (key, operation), n in sorted(_REQUEST_COUNTS.items()):
            counts.setdefault(key, {})[operation] = n
        return counts


def serve_request_counts() -> None:
    """Answer `GET /_arke/dynamodb-requests` with `request_counts()` as JSON (idempotent)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.__call__
    if getattr(original, "_arke_counts", False):
        return

    @functools.wraps(original)
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != REQUEST_COUNTS_PATH or environ.get("REQUEST_METHOD") != "GET":
            return original(self, environ, start_response)
        body = json.dumps(request_counts()).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    __call__._arke_counts = True  # type: ignore[attr-defined]
    DomainDispatcherApplication.__call__ = __call__


def wait_until_serving(url: str, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Return once the moto server `process` answers at `url` (tests and benchmarks start
    their own); RuntimeError if it exits first or stays silent `timeout_s`."""
    import requests

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            requests.get(f"{url}/moto-api/", timeout=1)
            return
        except requests.RequestException:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"moto did not start at {url}") from None
            time.sleep(0.1)


def trim_per_request_costs(check: bool = False) -> None:
    """What the server spends per request that DynamoDB does not (idempotent but the log level)."""
    _list_moto_modules_once()
    _parse_update_expressions_once()
    _serialize_dynamodb_json_fast(check=check)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request costs 7% of the server


def main(argv: list[str] | None = None) -> None:
    """Same arguments as `python -m moto.server` (`-H HOST -p PORT`)."""
    serialize_dynamodb()
    require_region()
    serve_request_counts()
    _route_dynamodb_at_once()
    if os.environ.get(NO_TRIMS_ENV) != "1":
        trim_per_request_costs(check=os.environ.get(CHECK_FAST_JSON_ENV) == "1")
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
