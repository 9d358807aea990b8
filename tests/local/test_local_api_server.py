"""The stack's API server (arke_local/api_server.py) takes a pool's burst of connections:
with chalice local's own backlog of 5, the kernel drops the 7th waiting connection's SYN
and it waits a second for the retransmit (bench/stack_load.py measured that as p99)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from chalice import Chalice, local
from chalice.config import Config

from arke_local import api_server

WAITING = 40  # connections the server has not accepted yet


@pytest.fixture
def restore_backlog() -> Iterator[None]:
    before = local.ThreadedHTTPServer.request_queue_size
    yield
    local.ThreadedHTTPServer.request_queue_size = before


def connect_all(port: int, count: int, timeout_s: float = 0.3) -> int:
    """Open up to `count` connections to a server that accepts none; how many the kernel
    completed before the first that it did not (stops there: a dropped SYN waits 1 s)."""
    done, sockets = 0, []
    try:
        for _ in range(count):
            s = socket.socket()
            s.settimeout(timeout_s)
            sockets.append(s)
            try:
                s.connect(("127.0.0.1", port))
                done += 1
            except OSError:
                break
    finally:
        for s in sockets:
            s.close()
    return done


def server(app_name: str) -> local.LocalDevServer:
    """chalice local's server, bound and listening, its accept loop not running."""
    return local.LocalDevServer(Chalice(app_name), Config(), "127.0.0.1", 0)


def test_waiting_connections_are_held_not_dropped(restore_backlog):
    api_server.raise_listen_backlog()
    dev = server("backlog")
    try:
        assert connect_all(dev.server.server_address[1], WAITING) == WAITING
    finally:
        dev.server.server_close()


def test_chalice_local_s_own_backlog_drops_them(restore_backlog):
    """The baseline the launcher exists for: without it, most of the burst waits on SYN
    retransmits (if chalice ever raises its backlog itself, this fails and the launcher can go)."""
    dev = server("default")
    try:
        assert connect_all(dev.server.server_address[1], WAITING) < WAITING
    finally:
        dev.server.server_close()
