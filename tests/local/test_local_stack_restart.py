"""Killing and restarting one component of the stack (the chaos suite kills the pump):
the whole group goes, the rest runs on, the new process appends to the same log."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from arke_local.endpoints import Ports
from arke_local.stack import (
    Component,
    LocalStack,
    ProcessSupervisor,
    StackError,
    StackOptions,
    _group_alive,
)

from .test_local_stack import SPAWNS_A_GRANDCHILD, _wait_for_line


def test_kill_takes_the_whole_group_and_leaves_the_others(tmp_path):
    sup = ProcessSupervisor(log_dir=tmp_path)
    env = dict(os.environ)
    a = sup.start(Component("tree", [sys.executable, "-c", SPAWNS_A_GRANDCHILD]), env, tmp_path)
    b = sup.start(Component("other", [sys.executable, "-c", SPAWNS_A_GRANDCHILD]), env, tmp_path)
    _wait_for_line(tmp_path / "tree.log", "up")
    _wait_for_line(tmp_path / "other.log", "up")
    try:
        assert sup.kill("tree") == -signal.SIGKILL
        assert not _group_alive(a.pgid)
        assert _group_alive(b.pgid)
        assert [r.component.name for r in sup.running] == ["other"]
        with pytest.raises(KeyError):
            sup.kill("tree")
        again = sup.start(Component("tree", [sys.executable, "-c", "print('again', flush=True)"]),
                          env, tmp_path, append=True)
        again.process.wait(10)
        _wait_for_line(tmp_path / "tree.log", "again")
        assert (tmp_path / "tree.log").read_text().startswith("up")  # appended, not truncated
    finally:
        sup.stop_all(grace_s=1.0)


def test_stack_restarts_its_pump(tmp_path):
    stack = LocalStack(StackOptions(ports=Ports.free(), log_dir=tmp_path, api=False, emulator=False))
    with stack:
        old = stack.supervisor.find("pump")
        _wait_for_line(tmp_path / "pump.log", "[Pump] started")
        new = stack.restart_component("pump")
        assert new.process.pid != old.process.pid
        assert not _group_alive(old.pgid)
        assert new.process.poll() is None
        deadline = time.monotonic() + 20
        while (tmp_path / "pump.log").read_text().count("[Pump] started") < 2:
            assert time.monotonic() < deadline, (tmp_path / "pump.log").read_text()
            time.sleep(0.1)
        with pytest.raises(StackError):
            stack.start_component("pump")
        with pytest.raises(KeyError):
            stack.start_component("nonesuch")
    assert not _group_alive(new.pgid)
