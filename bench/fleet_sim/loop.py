"""The event loop: one heap of timed callbacks, and actors (greenlets) that run the
orchestrator's real handlers until they wait (a DynamoDB or Fly request, a sleep).

Deterministic by construction: one OS thread, events ordered by (time, sequence number),
and an actor runs only when the loop switches to it, so no thread scheduler decides
anything. An actor's turn ends at a yield point (`sleep`, `park`); the loop then takes the
next event. What an actor sees of its process (the Services `get_services()` returns, the
Chalice app's current request) is saved when its turn ends and put back when it resumes,
so a Lambda container's or the tick's state never leaks into another's.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import greenlet

from .clock import VirtualClock


class SimulationError(RuntimeError):
    """The simulation itself went wrong (not the orchestrator): a wait outside an actor."""


@dataclass(frozen=True)
class Slot:
    """An attribute that belongs to a process, not to the Python process (e.g. the
    orchestrator's installed Services): swapped in and out with each actor."""

    owner: Any
    name: str


@dataclass
class Actor:
    name: str
    values: dict[Slot, Any]
    glet: greenlet.greenlet | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    fn: Callable[..., None] = field(compare=False)
    args: tuple = field(compare=False, default=())


class Loop:
    def __init__(self, clock: VirtualClock, slots: list[Slot] | None = None) -> None:
        self.clock = clock
        self.slots = slots or []
        self._heap: list[_Event] = []
        self._seq = 0
        self._main = greenlet.getcurrent()
        self.current: Actor | None = None
        self.events_run = 0
        self.switches = 0

    @property
    def now(self) -> float:
        return self.clock.now

    # ---- scheduling ---------------------------------------------------------------------

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, _Event(max(t, self.clock.now), self._seq, fn, args))

    def after(self, dt: float, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.clock.now + max(0.0, dt), fn, *args)

    def spawn(self, name: str, fn: Callable[[], None], values: dict[Slot, Any],
              on_done: Callable[[Actor], None] | None = None, delay: float = 0.0) -> Actor:
        """Start `fn` as an actor `delay` seconds from now; `on_done(actor)` runs in the loop
        when it returns or raises (its exception in `actor.error`)."""
        actor = Actor(name, dict(values))

        def body() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - handed to on_done, never lost
                actor.error = exc
            actor.done = True
            if on_done is not None:
                self.after(0.0, on_done, actor)

        actor.glet = greenlet.greenlet(body, parent=self._main)
        self.after(delay, self._resume, actor)
        return actor

    # ---- yield points (called from inside an actor) -------------------------------------

    def in_actor(self) -> bool:
        return self.current is not None and greenlet.getcurrent() is not self._main

    def sleep(self, seconds: float) -> None:
        """End this actor's turn for `seconds` of virtual time."""
        actor = self._require_actor("sleep")
        self.after(max(0.0, seconds), self._resume, actor)
        self._main.switch()

    def park(self) -> Actor:
        """End this actor's turn until someone calls `wake(actor)`."""
        actor = self._require_actor("park")
        self._main.switch()
        return actor

    def wake(self, actor: Actor) -> None:
        self.after(0.0, self._resume, actor)

    def _require_actor(self, what: str) -> Actor:
        if not self.in_actor():
            raise SimulationError(f"{what}() outside an actor: only the orchestrator's handlers wait")
        assert self.current is not None
        return self.current

    def _resume(self, actor: Actor) -> None:
        if actor.done or actor.glet is None:
            return
        for slot, value in actor.values.items():
            setattr(slot.owner, slot.name, value)
        self.current = actor
        self.switches += 1
        try:
            actor.glet.switch()
        finally:
            self.current = None
            for slot in actor.values:
                actor.values[slot] = getattr(slot.owner, slot.name)

    # ---- running ------------------------------------------------------------------------

    def run(self, stop: Callable[[], bool], until_s: float) -> bool:
        """Run events until `stop()` holds (True) or virtual time passes `until_s` or no
        event is left (False)."""
        while self._heap:
            if stop():
                return True
            event = heapq.heappop(self._heap)
            if event.at > until_s:
                heapq.heappush(self._heap, event)
                return False
            self.clock.advance_to(event.at)
            self.events_run += 1
            event.fn(*event.args)
        return stop()
