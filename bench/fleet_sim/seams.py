"""Where the simulation takes over the orchestrator's process: its clock, its sleeps, its
thread pools, its locks and its random ids, and nothing else.

Found by what they are, not by their names: every module of `chalicelib` (and `app`) is
scanned for globals that are the `time`, `uuid`, `threading` or `concurrent.futures`
module, the functions `time.time`/`monotonic`/`sleep`/`perf_counter` or the class
`ThreadPoolExecutor`, and for function defaults bound to those functions (a
`clock=time.monotonic` parameter). So code the orchestrator gains later is covered without
a change here, and no orchestrator file needs a seam of its own. `uninstall()` puts every
replaced value back.

- time: the virtual clock's readings; `sleep` ends the actor's turn (loop.sleep).
- ThreadPoolExecutor: `map` runs each call as an actor of its own, `max_workers` at once,
  the caller waiting in virtual time (ActorExecutor); outside an actor, in the caller.
- threading.Lock/RLock made at call time: a lock an actor may hold across a request,
  e.g. the pool candidates' read lock, waits in virtual time instead of blocking the thread.
- uuid.uuid4: drawn from the run's seed, so machine names and owners repeat run to run.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import pkgutil
import random
import sys
import threading
import time as real_time
import types
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from .clock import VirtualClock, time_module
from .loop import Loop, SimulationError

PACKAGES = ("chalicelib",)
MODULES = ("app",)


class InlineExecutor:
    """concurrent.futures.ThreadPoolExecutor's interface, running each call at once."""

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "", **_: Any) -> None:
        self.max_workers = max_workers

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - a future carries it, as a pool's would
            future.set_exception(exc)
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        return iter([fn(*args) for args in zip(*iterables, strict=False)])

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass

    def __enter__(self) -> InlineExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class ActorExecutor(InlineExecutor):
    """ThreadPoolExecutor.map as the pool's threads run it: inside an actor each call is an
    actor of its own, at most `max_workers` at once, and the caller waits in virtual time
    until all have ended (results in order, the first error in order raised). So a pass's
    32 concurrent starts of standing machines overlap their Fly and DynamoDB waits, as the
    threads do, instead of queueing one behind the other."""

    loop: Loop | None = None  # set by Seams.install

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "", **kw: Any) -> None:
        super().__init__(max_workers, thread_name_prefix, **kw)
        self.prefix = thread_name_prefix or "pool"

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        loop, items = self.loop, list(zip(*iterables, strict=False))
        workers = max(1, self.max_workers or 1)
        if loop is None or not loop.in_actor() or len(items) <= 1 or workers == 1:
            return iter([fn(*args) for args in items])
        parent = loop.current
        assert parent is not None
        values = {slot: getattr(slot.owner, slot.name) for slot in loop.slots}
        results: list[Any] = [None] * len(items)
        errors: list[BaseException | None] = [None] * len(items)
        state = {"next": 0, "running": 0}

        def start_next() -> None:
            index = state["next"]
            state["next"] += 1
            state["running"] += 1

            def call() -> None:
                try:
                    results[index] = fn(*items[index])
                except BaseException as exc:  # noqa: BLE001 - raised in the caller, as map does
                    errors[index] = exc

            loop.spawn(f"{parent.name.split(':')[0]}:{self.prefix}", call, values, on_done=finished)

        def finished(_: Any) -> None:
            state["running"] -= 1
            if state["next"] < len(items):
                start_next()
            elif state["running"] == 0:
                loop.wake(parent)

        for _ in range(min(workers, len(items))):
            start_next()
        loop.park()
        for error in errors:
            if error is not None:
                raise error
        return iter(results)


class CoopLock:
    """A lock whose waiters wait in virtual time: taken by one actor, asked for by another,
    the second parks until the first releases it."""

    def __init__(self, loop: Loop) -> None:
        self._loop = loop
        self._owner: object | None = None
        self._depth = 0
        self._waiters: deque = deque()
        self.reentrant = False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = self._loop.current or "main"
        while self._owner is not None and not (self.reentrant and self._owner is me):
            if not blocking:
                return False
            if not self._loop.in_actor():
                raise SimulationError("a lock held by an actor was asked for outside any actor")
            self._waiters.append(self._loop.current)
            self._loop.park()
        self._owner, self._depth = me, self._depth + 1
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth > 0:
            return
        self._owner = None
        if self._waiters:
            self._loop.wake(self._waiters.popleft())

    def locked(self) -> bool:
        return self._owner is not None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def threading_module(loop: Loop) -> types.ModuleType:
    """`threading` with cooperative Lock and RLock; everything else is the real module."""

    class CoopThreading(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            return getattr(threading, name)

    def rlock() -> CoopLock:
        lock = CoopLock(loop)
        lock.reentrant = True
        return lock

    module = CoopThreading("threading")
    module.Lock = lambda: CoopLock(loop)
    module.RLock = rlock
    return module


def uuid_module(rng: random.Random) -> types.ModuleType:
    class SeededUuid(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            return getattr(uuid, name)

    module = SeededUuid("uuid")
    module.uuid4 = lambda: uuid.UUID(int=rng.getrandbits(128), version=4)
    return module


def futures_module() -> types.ModuleType:
    class InlineFutures(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            return getattr(concurrent.futures, name)

    module = InlineFutures("concurrent.futures")
    module.ThreadPoolExecutor = ActorExecutor
    return module


def orchestrator_modules() -> list[types.ModuleType]:
    """Every module of the orchestrator's packages, imported now so none is missed."""
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            importlib.import_module(info.name)
    for name in MODULES:
        importlib.import_module(name)
    return [m for name, m in sorted(sys.modules.items())
            if m is not None and (name in MODULES or name.split(".")[0] in PACKAGES)]


class Seams:
    """The replacements, installed into the orchestrator's modules and taken out again."""

    def __init__(self, clock: VirtualClock, loop: Loop, seed: int) -> None:
        self._loop = loop
        self.time = time_module(clock, loop.sleep)
        self.values: dict[int, Any] = {
            id(real_time): self.time,
            id(real_time.time): self.time.time,
            id(real_time.monotonic): self.time.monotonic,
            id(real_time.perf_counter): self.time.perf_counter,
            id(real_time.sleep): self.time.sleep,
            id(uuid): uuid_module(random.Random(f"uuid:{seed}")),
            id(threading): threading_module(loop),
            id(concurrent.futures): futures_module(),
            id(concurrent.futures.ThreadPoolExecutor): ActorExecutor,
        }
        self._undo: list[Callable[[], None]] = []
        self.replaced: list[str] = []  # "module.name" of every global replaced (the report lists them)

    def _swap(self, value: Any) -> Any:
        return self.values.get(id(value), value)

    def install(self) -> Seams:
        ActorExecutor.loop = self._loop
        for module in orchestrator_modules():
            self._patch_globals(module)
        return self

    def _patch_globals(self, module: types.ModuleType) -> None:
        for name, value in list(vars(module).items()):
            new = self._swap(value)
            if new is not value:
                self._set(module, name, value, new)
                self.replaced.append(f"{module.__name__}.{name}")
            elif isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
                self._patch_defaults(value)
            elif isinstance(value, type) and value.__module__ == module.__name__:
                for member in vars(value).values():
                    func = getattr(member, "__func__", member)
                    if isinstance(func, types.FunctionType):
                        self._patch_defaults(func)

    def _patch_defaults(self, func: types.FunctionType) -> None:
        defaults = func.__defaults__
        if defaults and any(self._swap(d) is not d for d in defaults):
            self._set(func, "__defaults__", defaults, tuple(self._swap(d) for d in defaults))
            self.replaced.append(f"{func.__module__}.{func.__qualname__} (defaults)")
        kwdefaults = func.__kwdefaults__
        if kwdefaults and any(self._swap(d) is not d for d in kwdefaults.values()):
            self._set(func, "__kwdefaults__", kwdefaults, {k: self._swap(d) for k, d in kwdefaults.items()})
            self.replaced.append(f"{func.__module__}.{func.__qualname__} (keyword defaults)")

    def _set(self, owner: Any, name: str, old: Any, new: Any) -> None:
        setattr(owner, name, new)
        self._undo.append(lambda: setattr(owner, name, old))

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()
        ActorExecutor.loop = None


class RealSleepGuard:
    """While installed, a real `time.sleep` anywhere in the process raises: a wait the seams
    missed would pass real time and no virtual time, and the run would not mean what it says."""

    def __init__(self) -> None:
        self._original = real_time.sleep

    def install(self) -> RealSleepGuard:
        def refuse(seconds: float) -> None:
            raise SimulationError(f"a real time.sleep({seconds}) inside the simulation")
        real_time.sleep = refuse
        return self

    def uninstall(self) -> None:
        real_time.sleep = self._original
