"""DynamoDB as the orchestrator meets it in the simulation: real moto, in-process, with the
service's latency and per-partition throughput laid over it through botocore's event hooks
on the orchestrator's own clients (chalicelib.ddb_metrics.dynamodb_clients).

Per request, inside the actor that makes it:
- `before-parameter-build`: the request's parameters are kept (its tables and keys);
- `before-call`: the images of the items it writes are read from moto's tables, and the
  actor waits the way there (half the latency; on the `moto` server profile, its turn at
  one server that answers one request at a time, as the local stack's moto does);
- moto applies it;
- `after-call`: the images after it; its write units (table, local and global indexes,
  by the rules of bench/item_size.py) or read units (the items it returned) are charged to
  their partitions (capacity.py), and the actor waits the way back plus any throttling.

Requests made outside an actor (the harness reading the outcome) are neither delayed nor
counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.item_size import IndexSpec, index_write_units, item_size_bytes, read_units, write_units

from .capacity import Partition, PartitionLimits
from .loop import Loop

WRITES = ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem")


@dataclass(frozen=True)
class DynamoLatency:
    """Round-trip seconds per operation (`default` for the others). On the `moto` profile
    `service_s` is what the one server spends per request (requests queue for it)."""

    default_s: float = 0.006
    per_op_s: Mapping[str, float] = field(default_factory=dict)
    service_s: Mapping[str, float] | None = None  # None: no shared server (DynamoDB itself)

    def round_trip(self, op: str) -> float:
        return self.per_op_s.get(op, self.default_s)


@dataclass
class _TableShape:
    hash_key: str
    range_key: str | None
    local: list[IndexSpec]
    global_: list[IndexSpec]

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.hash_key,) + ((self.range_key,) if self.range_key else ())


@dataclass
class _Write:
    table: str
    key: dict[str, Any]
    kind: str  # Put, Update, Delete, ConditionCheck
    transactional: bool
    before: dict[str, Any] | None = None


@dataclass
class _Pending:
    op: str
    params: dict[str, Any]
    writes: list[_Write] = field(default_factory=list)
    started: float = 0.0


class DynamoModel:
    def __init__(self, loop: Loop, latency: DynamoLatency, limits: PartitionLimits | None = None,
                 account: str = "123456789012", region: str = "us-east-1") -> None:
        self.loop, self.latency = loop, latency
        self.limits = limits or PartitionLimits()
        self.account, self.region = account, region
        self.requests: Counter = Counter()  # operation -> requests
        self.by_actor: Counter = Counter()  # actor kind (api, tick, intake) -> requests
        self.write_units = 0.0
        self.read_units = 0.0
        self._pending: dict[int, _Pending] = {}
        self._shapes: dict[str, _TableShape] = {}
        self._hooked: set[int] = set()
        self._server_free = 0.0
        self.cores: Any = None  # the stack's shared cores (cpu.Cores), when the profile has them

    # ---- wiring -------------------------------------------------------------------------

    def attach(self, clients: list[Any]) -> None:
        """Hook every client not hooked yet (idempotent: models may make new clients)."""
        for client in clients:
            if id(client) in self._hooked:
                continue
            self._hooked.add(id(client))
            events = client.meta.events
            events.register("before-parameter-build.dynamodb", self._params)
            events.register("before-call.dynamodb", self._before)
            events.register("after-call.dynamodb", self._after)

    def _backend(self) -> Any:
        from moto.dynamodb.models import dynamodb_backends

        return dynamodb_backends[self.account][self.region]

    def _shape(self, table_name: str) -> _TableShape:
        shape = self._shapes.get(table_name)
        if shape is None:
            table = self._backend().get_table(table_name)
            shape = self._shapes[table_name] = _TableShape(
                table.hash_key_attr, table.range_key_attr,
                [_spec(ix) for ix in table.indexes], [_spec(ix) for ix in table.global_indexes])
        return shape

    # ---- the hooks ----------------------------------------------------------------------

    def _params(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        if self.loop.in_actor():
            self._pending[id(self.loop.current)] = _Pending(model.name, params)

    def _before(self, model: Any, **_: Any) -> None:
        pending = self._pending.get(id(self.loop.current)) if self.loop.in_actor() else None
        if pending is None:
            return
        pending.started = self.loop.now
        pending.writes = self._writes_of(pending.op, pending.params)
        for write in pending.writes:
            write.before = self._image(write.table, write.key)
        self.requests[pending.op] += 1
        self.by_actor[self.loop.current.name.split(":")[0]] += 1  # type: ignore[union-attr]
        self.loop.sleep(self._way_there(pending.op))

    def _after(self, model: Any, parsed: dict[str, Any] | None = None, **_: Any) -> None:
        pending = self._pending.pop(id(self.loop.current), None) if self.loop.in_actor() else None
        if pending is None:
            return
        now = self.loop.now
        if pending.writes:
            wait = self.limits.charge(self._write_units(pending.writes), now, write=True)
        else:
            wait = self.limits.charge(self._read_units(pending, parsed or {}), now, write=False)
        self.loop.sleep(self._way_back(pending.op) + wait)

    # ---- latency ------------------------------------------------------------------------

    def _way_there(self, op: str) -> float:
        """Half the round trip, or on a one-server profile: the way there and the request's
        turn at the server (it is applied when its service ends)."""
        half = self.latency.round_trip(op) / 2
        if self.latency.service_s is None:
            return half
        arrival = self.loop.now + half
        cost = self.latency.service_s.get(op, self.latency.service_s.get("default", 0.0))
        if self.cores is not None:
            self._server_free = self.cores.run(arrival, cost, self._server_free)
        else:
            self._server_free = max(arrival, self._server_free) + cost
        return self._server_free - self.loop.now

    def _way_back(self, op: str) -> float:
        return self.latency.round_trip(op) / 2

    # ---- what a request touches ---------------------------------------------------------

    def _writes_of(self, op: str, params: dict[str, Any]) -> list[_Write]:
        if op == "TransactWriteItems":
            writes = []
            for entry in params.get("TransactItems", []):
                for kind, body in entry.items():
                    writes.append(_Write(body["TableName"], self._key_of(body["TableName"], body), kind, True))
            return writes
        if op == "BatchWriteItem":
            writes = []
            for table, requests in params.get("RequestItems", {}).items():
                for request in requests:
                    for kind, body in request.items():
                        writes.append(_Write(table, self._key_of(table, body), kind, False))
            return writes
        if op in WRITES:
            table = params["TableName"]
            return [_Write(table, self._key_of(table, params), op.removesuffix("Item"), False)]
        return []

    def _key_of(self, table: str, body: dict[str, Any]) -> dict[str, Any]:
        if "Key" in body:
            return body["Key"]
        shape = self._shape(table)
        return {k: body["Item"][k] for k in shape.keys}

    def _image(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        try:
            item = self._backend().get_item(table, key)
        except Exception:  # noqa: BLE001 - moto will refuse the request itself
            return None
        return item.to_json()["Attributes"] if item is not None else None

    # ---- units --------------------------------------------------------------------------

    def _write_units(self, writes: list[_Write]) -> dict[Partition, float]:
        units: dict[Partition, float] = {}
        for write in writes:
            shape = self._shape(write.table)
            after = write.before if write.kind == "ConditionCheck" else self._image(write.table, write.key)
            home = (write.table, "", _value(write.key[shape.hash_key]))
            size = max(item_size_bytes(write.before or {}), item_size_bytes(after or {}))
            table_units = write_units(size, write.transactional)
            _add(units, home, table_units)
            self.write_units += table_units
            if write.kind == "ConditionCheck":
                continue
            for index in shape.local:  # an LSI lives in the item's own partition
                amount = sum(index_write_units(write.before, after, index, shape.keys))
                _add(units, home, amount)
                self.write_units += amount
            for index in shape.global_:
                self._global_units(units, write.table, index, write.before, after, shape)
        return units

    def _global_units(self, units: dict[Partition, float], table: str, index: IndexSpec,
                      before: dict | None, after: dict | None, shape: _TableShape) -> None:
        """A global index's writes go to the index's own partition of the entry's key: a put
        to the new entry's, a delete to the old one's (both when the key moved)."""
        changes = index_write_units(before, after, index, shape.keys)
        has = [image for image in (before, after) if image is not None and index.keys[0] in image]
        if len(changes) == 2:
            targets = has
        elif after is not None and index.keys[0] in after:
            targets = [after]
        else:
            targets = has[:1]
        for image, amount in zip(targets, changes, strict=False):
            _add(units, (table, index.name, _value(image[index.keys[0]])), amount)
            self.write_units += amount

    def _read_units(self, pending: _Pending, parsed: dict[str, Any]) -> dict[Partition, float]:
        params, op = pending.params, pending.op
        consistent = bool(params.get("ConsistentRead"))
        if op == "BatchGetItem":
            units: dict[Partition, float] = {}
            for table, items in parsed.get("Responses", {}).items():
                shape = self._shape(table)
                for item in items:
                    self._charge_read(units, (table, "", _value(item.get(shape.hash_key, {}))), [item], consistent)
            return units
        table = params.get("TableName", "")
        items = parsed.get("Items") if "Items" in parsed else [parsed["Item"]] if parsed.get("Item") else []
        units = {}
        self._charge_read(units, self._read_partition(table, params.get("IndexName"), items), items, consistent)
        return units

    def _read_partition(self, table: str, index_name: str | None, items: list[dict]) -> Partition:
        shape = self._shape(table)
        spec = next((ix for ix in shape.global_ if ix.name == index_name), None)
        key = spec.keys[0] if spec is not None else shape.hash_key
        value = _value(items[0][key]) if items and key in items[0] else "?"
        return (table, spec.name if spec is not None else "", value)

    def _charge_read(self, units: dict[Partition, float], partition: Partition, items: list[dict],
                     consistent: bool) -> None:
        size = sum(item_size_bytes(item) for item in items)
        amount = read_units(size, consistent=consistent) if items else (1.0 if consistent else 0.5)
        _add(units, partition, amount)
        self.read_units += amount


def _spec(index: Any) -> IndexSpec:
    projection = index.projection or {}
    return IndexSpec(index.name, tuple(index.schema_key_attrs), projection.get("ProjectionType", "ALL"),
                     tuple(projection.get("NonKeyAttributes", ())))


def _value(attribute: Mapping[str, Any]) -> str:
    [(_, value)] = attribute.items()
    return str(value)


def _add(units: dict[Partition, float], partition: Partition, amount: float) -> None:
    if amount:
        units[partition] = units.get(partition, 0.0) + amount

