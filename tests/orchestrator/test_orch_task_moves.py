"""The table of task moves (store/tasks.py MOVES): the only moves a store function can write."""

from __future__ import annotations

import itertools

import pytest

from chalicelib.states import TaskStatus
from chalicelib.store import tasks


@pytest.mark.parametrize("source, target", list(itertools.product(TaskStatus, TaskStatus)))
def test_only_the_moves_in_the_table_can_be_written(source, target):
    if (source, target) in tasks.MOVES:
        actions = tasks._moved_to(source, target, "tiff_x")
        assert len(actions) == 2  # the status and its index key, nothing else
    else:
        with pytest.raises(ValueError, match=f"from {source.value} to {target.value}"):
            tasks._moved_to(source, target, "tiff_x")


def test_an_ended_task_never_moves_but_by_an_admin_retry():
    assert {t for (s, t) in tasks.MOVES if s is TaskStatus.COMPLETED} == set()
    assert {t for (s, t) in tasks.MOVES if s is TaskStatus.FAILED} == {TaskStatus.PENDING}
