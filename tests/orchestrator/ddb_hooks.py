"""Faults at the DynamoDB request boundary, for the race and crash tests.

botocore's event hooks on every DynamoDB client the orchestrator uses (one per model's
connection, and the transaction connection) let a test kill an invocation before a chosen
request is sent or right after the n-th one was applied (its answer never arrives: the
process died), hold one thread at a request while another runs, or run a competing write
at exactly that point. Nothing inside our own code is replaced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.ddb_metrics import dynamodb_clients
from chalicelib.settings import Settings


class Crash(BaseException):
    """The invocation dies here (BaseException: no `except Exception` of ours catches it)."""


Rule = Callable[[str, dict[str, Any]], bool]  # (operation, API params) -> matches


@dataclass
class _Hook:
    rule: Rule
    action: Callable[[], None]
    thread: str | None
    before: bool


class DynamoHooks:
    def __init__(self, settings: Settings) -> None:
        self.calls: list[tuple[str, str]] = []  # (thread name, operation)
        self.crash_after: int | None = None
        self._hooks: list[_Hook] = []
        self._lock = threading.Lock()
        self._current = threading.local()  # the params of this thread's request
        self._clients = dynamodb_clients(settings)
        for client in self._clients:
            client.meta.events.register("before-parameter-build.dynamodb", self._before)
            client.meta.events.register("after-call.dynamodb", self._after)

    def detach(self) -> None:
        for client in self._clients:
            client.meta.events.unregister("before-parameter-build.dynamodb", self._before)
            client.meta.events.unregister("after-call.dynamodb", self._after)

    def once(self, rule: Rule, action: Callable[[], None], thread: str | None = None,
             before: bool = False) -> None:
        """Run `action` once, at the first request matching `rule` (of `thread`, if given):
        before it is sent, or after it was applied."""
        self._hooks.append(_Hook(rule, action, thread, before))

    def crash_before(self, rule: Rule) -> None:
        def crash() -> None:
            raise Crash("killed before a DynamoDB request")
        self.once(rule, crash, before=True)

    def hold(self, thread: str, rule: Rule) -> tuple[threading.Event, threading.Event]:
        """Stop `thread` right after its first request matching `rule` was applied. Returns
        (reached, release): wait for the first, set the second to let it go on."""
        reached, release = threading.Event(), threading.Event()

        def wait() -> None:
            reached.set()
            release.wait(30)
        self.once(rule, wait, thread)
        return reached, release

    def _fire(self, operation: str, before: bool) -> None:
        name, params = threading.current_thread().name, getattr(self._current, "params", {})
        for hook in list(self._hooks):
            if hook.before == before and hook.thread in (None, name) and hook.rule(operation, params):
                with self._lock:
                    if hook not in self._hooks:
                        continue
                    self._hooks.remove(hook)
                hook.action()

    def _before(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self._current.params = params
        with self._lock:
            self.calls.append((threading.current_thread().name, model.name))
        self._fire(model.name, before=True)

    def _after(self, model: Any, **_: Any) -> None:
        self._fire(model.name, before=False)
        with self._lock:
            count = len(self.calls)
        if self.crash_after is not None and count >= self.crash_after:
            self.crash_after = None
            raise Crash(f"killed after DynamoDB request {count} ({model.name})")


def _table(params: dict[str, Any], word: str) -> bool:
    return word in str(params.get("TableName", ""))


def updates_batch_item(operation: str, params: dict[str, Any]) -> bool:
    return operation in ("PutItem", "UpdateItem") and _table(params, "batches")


def records_machine(operation: str, params: dict[str, Any]) -> bool:
    """store.record_machine: the only single-item update of a task."""
    return operation == "UpdateItem" and _table(params, "tasks")


def reads_open_tasks(operation: str, params: dict[str, Any]) -> bool:
    return operation == "Query" and params.get("IndexName") == "open-index"


def reads_in_flight_counter(operation: str, params: dict[str, Any]) -> bool:
    return operation == "GetItem" and _table(params, "batches") and "#in-flight" in str(params.get("Key"))
