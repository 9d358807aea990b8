"""The local stack's API server: `chalice local`, unchanged, with a listen backlog a pool needs.

chalice local already serves each connection in its own thread (chalice.local's
ThreadedHTTPServer), but its socket listens with socketserver's default backlog of 5. A
pool of 230 machines opens ~180 connections a second (results, pulls, heartbeats); once
more than 5 wait for the accept loop, the kernel drops their SYNs and each waits for a
retransmit: 1 s, then 3 s. bench/stack_load.py measured a 1 s p99 at 200 req/s from 50
threads. This launcher raises the backlog and then runs chalice's own CLI with the same
arguments (`python -m arke_local.api_server --project-dir . local --stage ...`), so routes,
stages and logging stay chalice local's. Never used in AWS: Lambda has no socket here.
"""

from __future__ import annotations

import sys

LISTEN_BACKLOG = 1024  # the kernel caps it at net.core.somaxconn (4096 on current Linux)


def raise_listen_backlog(backlog: int = LISTEN_BACKLOG) -> None:
    """Make every chalice local server created after this listen with `backlog`."""
    from chalice import local

    local.ThreadedHTTPServer.request_queue_size = backlog


def main(argv: list[str] | None = None) -> int:
    from chalice.cli import main as chalice_main

    raise_listen_backlog()
    sys.argv = ["chalice", *(sys.argv[1:] if argv is None else argv)]
    return chalice_main()


if __name__ == "__main__":
    sys.exit(main())
