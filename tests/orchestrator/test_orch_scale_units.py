"""The size and capacity-unit rules bench/capacity.py (docs/scale.md) computes with, each
against a value worked out by hand from the DynamoDB developer guide's rules."""

from __future__ import annotations

import pytest

from bench.item_size import (
    IndexSpec,
    index_write_units,
    item_size_bytes,
    read_units,
    write_cost,
    write_units,
)
from chalicelib.models import Task


@pytest.mark.parametrize(("item", "size"), [
    ({"batch_id": {"S": "abc"}}, 8 + 3),
    ({"id": {"S": "é"}}, 2 + 2),  # UTF-8 bytes, not characters
    ({"n": {"N": "12345"}}, 1 + 3 + 1),  # five significant digits: three bytes, plus one
    ({"n": {"N": "1000"}}, 1 + 1 + 1),  # trailing zeroes trimmed
    ({"n": {"N": "0.0012"}}, 1 + 1 + 1),  # leading zeroes trimmed
    ({"n": {"N": "1764590123456"}}, 1 + 7 + 1),  # an epoch-ms time: 13 digits, seven bytes
    ({"f": {"BOOL": True}, "z": {"NULL": True}}, 2 + 2),
    ({"m": {"M": {}}}, 1 + 3),
    ({"m": {"M": {"a": {"N": "1"}, "bb": {"S": "xyz"}}}}, 1 + 3 + (1 + 1 + 2) + (1 + 2 + 3)),
    ({"l": {"L": [{"S": "ab"}, {"BOOL": False}]}}, 1 + 3 + (1 + 2) + (1 + 1)),
    ({"ss": {"SS": ["a", "bc"]}}, 2 + 3),
])
def test_item_size_follows_the_documented_rules(item, size):
    assert item_size_bytes(item) == size


def test_unknown_types_are_refused():
    with pytest.raises(ValueError):
        item_size_bytes({"x": {"Q": "?"}})


@pytest.mark.parametrize(("size", "plain", "transactional"), [
    (0, 1, 2), (1024, 1, 2), (1025, 2, 4), (3000, 3, 6)])
def test_write_units_per_started_kb_and_twice_in_a_transaction(size, plain, transactional):
    assert write_units(size) == plain
    assert write_units(size, transactional=True) == transactional


def test_read_units_per_started_4kb():
    assert read_units(4096) == 1 and read_units(4097) == 2
    assert read_units(100, consistent=False) == 0.5
    assert read_units(100, transactional=True) == 2


KEYS = ("batch_id", "task_id")
OPEN_ALL = IndexSpec("open", ("batch_id", "open_due"), "ALL")
OPEN_KEYS = IndexSpec("open", ("batch_id", "open_due"), "KEYS_ONLY")
OPEN_INCLUDE = IndexSpec("open", ("batch_id", "open_due"), "INCLUDE", ("attempts",))


def item(**values):
    return {k: ({"N": str(v)} if isinstance(v, int) else {"S": v}) for k, v in values.items()}


def test_index_writes_follow_the_entry():
    base = item(batch_id="b", task_id="t", attempts=1, log="x" * 2000)
    due = {**base, "open_due": {"N": "5"}}
    assert index_write_units(base, base, OPEN_ALL, KEYS) == []  # absent before and after: sparse
    assert index_write_units(base, due, OPEN_ALL, KEYS) == [2]  # enters: a put of the whole item
    assert index_write_units(due, base, OPEN_KEYS, KEYS) == [1]  # leaves: a delete
    moved = {**due, "open_due": {"N": "6"}}
    assert index_write_units(due, moved, OPEN_ALL, KEYS) == [2, 2]  # key moved: delete + put
    assert index_write_units(due, moved, OPEN_KEYS, KEYS) == [1, 1]
    longer = {**due, "log": {"S": "y" * 3000}}
    assert index_write_units(due, longer, OPEN_ALL, KEYS) == [3]  # a projected attribute: a put
    assert index_write_units(due, longer, OPEN_KEYS, KEYS) == []  # not projected: nothing
    assert index_write_units(due, longer, OPEN_INCLUDE, KEYS) == []
    counted = {**due, "attempts": {"N": "2"}}
    assert index_write_units(due, counted, OPEN_INCLUDE, KEYS) == [1]


def test_write_cost_bills_the_larger_image_and_reads_the_models_indexes():
    before = Task.of("b", "t", phase="p", status="pending", status_key="pending#t", open_due=5,
                     input_r2_key="k", created_at=1, updated_at=1).serialize()
    after = {**before, "performance": {"S": "z" * 1500}}
    cost = write_cost(before, after, Task, transactional=True)
    assert cost.table == 4  # ~1.6 KB after: two units, twice in a transaction
    assert set(cost.indexes) == {"open-index", "status-index"}
    smaller = write_cost(after, before, Task, transactional=False)
    assert smaller.table == 2  # the larger of the two images, even when the item shrinks
