"""Every moto server a test starts (the local stack's, or a test's own) runs in check mode:
each DynamoDB result it writes with `json.dumps` (arke_local/moto_server.py) is written by
moto's serializer too, and a difference fails the request, so the whole suite checks the
fast path the benchmarks rely on."""

from __future__ import annotations

import os

from arke_local.moto_server import CHECK_FAST_JSON_ENV

os.environ.setdefault(CHECK_FAST_JSON_ENV, "1")
