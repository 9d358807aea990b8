"""Counting DynamoDB requests through botocore's event hooks (benchmarks and tests).

Invariant 4 (O(1) per event) is a claim about request counts; this is how it is measured:
a `before-call` handler on every DynamoDB client the orchestrator uses (one per model's
connection, plus the transaction connection), counting by operation name.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from . import store
from .models import CLIENT_MODELS
from .settings import Settings


def dynamodb_clients(settings: Settings) -> list[Any]:
    """Every botocore DynamoDB client the orchestrator sends requests through, once each:
    one per model's connection, and the transaction connection."""
    clients = [m._get_connection().connection.client for m in CLIENT_MODELS]
    clients.append(store.connection(settings).client)
    return list({id(c): c for c in clients}.values())


class RequestCounter:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._clients: list[Any] = []

    def _on_call(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.counts[model.name] += 1

    def attach(self, settings: Settings) -> RequestCounter:
        for client in dynamodb_clients(settings):
            client.meta.events.register("before-call.dynamodb", self._on_call)
            self._clients.append(client)
        return self

    def detach(self) -> None:
        for client in self._clients:
            client.meta.events.unregister("before-call.dynamodb", self._on_call)
        self._clients.clear()

    def total(self) -> int:
        return sum(self.counts.values())

    def take(self) -> Counter[str]:
        """The counts so far, and start again from zero."""
        with self._lock:
            counts, self.counts = self.counts, Counter()
        return counts
