"""DynamoDB item sizes and the capacity units a write costs, by the documented rules.

Used by bench/capacity.py (docs/scale.md) on items the real code wrote, in the wire format
pynamodb's `serialize()` gives ({"name": {"S": "..."}}). The rules, from the DynamoDB
developer guide ("Item sizes and formats", "Provisioned throughput considerations" of
secondary indexes):

- an item is the sum of its attributes; an attribute is its name's UTF-8 bytes plus its value;
- a string is its UTF-8 bytes, a binary its raw bytes, a number about one byte per two
  significant digits plus one, a boolean or null one byte;
- a list or map is 3 bytes plus, per element, 1 byte and the element (a map's element also
  its key's name); sets are the sum of their members;
- a write costs one unit per started KB of the larger of the item before and after it, and a
  transactional write twice that;
- an index entry is the table's key, the index's key and the projected attributes; a write
  that changes an entry's key deletes the old entry and puts the new one, a write that only
  changes a projected attribute puts the entry, and an item absent from a sparse index
  before and after costs that index nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KB = 1024

Item = Mapping[str, Mapping[str, Any]]


def _number_size(text: str) -> int:
    digits = text.lstrip("+-").replace(".", "").split("e")[0].split("E")[0].strip("0")
    return (max(len(digits), 1) + 1) // 2 + 1


def value_size(value: Mapping[str, Any]) -> int:
    """The size of one attribute value (without its name)."""
    [(kind, data)] = value.items()
    if kind == "S":
        return len(data.encode("utf-8"))
    if kind == "N":
        return _number_size(data)
    if kind == "B":
        return len(data) if isinstance(data, bytes | bytearray) else len(str(data).encode())
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode("utf-8")) for s in data)
    if kind == "NS":
        return sum(_number_size(n) for n in data)
    if kind == "BS":
        return sum(len(b) for b in data)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in data)
    if kind == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + value_size(v) for k, v in data.items())
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size_bytes(item: Item) -> int:
    """The size DynamoDB bills an item at: every attribute's name and value."""
    return sum(len(name.encode("utf-8")) + value_size(value) for name, value in item.items())


def write_units(size_bytes: int, transactional: bool = False) -> int:
    """Write units of one write of an item of `size_bytes` (at least one)."""
    units = max(1, math.ceil(size_bytes / KB))
    return units * 2 if transactional else units


def read_units(size_bytes: int, consistent: bool = True, transactional: bool = False) -> float:
    """Read units of reading `size_bytes` (4 KB steps; eventually consistent: half)."""
    units = max(1, math.ceil(size_bytes / (4 * KB)))
    return units * 2 if transactional else units if consistent else units / 2


@dataclass(frozen=True)
class IndexSpec:
    """A secondary index as the size rules see it: its key and what it projects."""

    name: str
    keys: tuple[str, ...]
    projection: str  # ALL, KEYS_ONLY or INCLUDE
    include: tuple[str, ...] = ()


def indexes_of(model: Any) -> list[IndexSpec]:
    """The secondary indexes of a pynamodb model, from its own schema."""
    schema = model._get_schema()
    specs = []
    for index in [*schema.get("local_secondary_indexes", []), *schema.get("global_secondary_indexes", [])]:
        projection = index["projection"]
        specs.append(IndexSpec(index["index_name"], tuple(k["AttributeName"] for k in index["key_schema"]),
                               projection["ProjectionType"], tuple(projection.get("NonKeyAttributes", ()))))
    return specs


def table_keys_of(model: Any) -> tuple[str, ...]:
    return tuple(k["AttributeName"] for k in model._get_schema()["key_schema"])


def index_entry(item: Item | None, index: IndexSpec, table_keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The item's entry in `index`, or None when it has none (a sparse index)."""
    if item is None or any(k not in item for k in index.keys):
        return None
    if index.projection == "ALL":
        return dict(item)
    names = set(table_keys) | set(index.keys) | (set(index.include) if index.projection == "INCLUDE" else set())
    return {k: v for k, v in item.items() if k in names}


def index_write_units(before: Item | None, after: Item | None, index: IndexSpec,
                      table_keys: tuple[str, ...]) -> list[int]:
    """The writes one change of an item makes in `index`, in units: [] (untouched),
    [put], [delete] or [delete, put] (its key moved)."""
    old, new = index_entry(before, index, table_keys), index_entry(after, index, table_keys)
    if old is None and new is None:
        return []
    if old is None:
        return [write_units(item_size_bytes(new))]
    if new is None:
        return [write_units(item_size_bytes(old))]
    if any(old[k] != new[k] for k in index.keys):
        return [write_units(item_size_bytes(old)), write_units(item_size_bytes(new))]
    if old != new:
        return [write_units(item_size_bytes(new))]
    return []


@dataclass(frozen=True)
class WriteCost:
    """One write of one item: the table's units and each index's."""

    table: int
    indexes: dict[str, int]

    @property
    def total(self) -> int:
        return self.table + sum(self.indexes.values())


def write_cost(before: Item | None, after: Item | None, model: Any, transactional: bool,
               indexes: list[IndexSpec] | None = None) -> WriteCost:
    """What a write that turns `before` into `after` costs (either may be None: a put of a
    new item, a delete). The table pays for the larger of the two images."""
    size = max(item_size_bytes(before or {}), item_size_bytes(after or {}))
    keys = table_keys_of(model)
    per_index = {ix.name: sum(index_write_units(before, after, ix, keys))
                 for ix in (indexes if indexes is not None else indexes_of(model))}
    return WriteCost(write_units(size, transactional), per_index)
