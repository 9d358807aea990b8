"""Ready tasks for pool pulls: read many at once, handed out one per pull (docs/pool.md).

A pull that queried a few ready tasks for itself cost two requests a task, and machines
pulling at the same moment read the same few: a 10,000-task batch at 190 machines lost about
7,500 claims to another machine's, each costing a transaction and a query more. Here a process reads
up to `READ` ready tasks in one query and gives every pull a different one, so the pulls one
process serves never race each other, and one query serves many pulls.

A candidate may be stale (claimed through another process, ended by a reset): the claim's
transaction is conditioned on the task still being pending at the attempt read, so a stale
candidate only fails its claim and is dropped. Candidates older than `MAX_AGE_S` are dropped
unclaimed, and every read is shuffled, so processes reading the same shard at once try
different tasks first.

A read that found every ready task (fewer than `READ`) also says when the next pending one
falls due. Until that time, and for at most `MAX_AGE_S`, the process's idle pulls are
answered from it without a query: a pool waiting for a retry's backoff, or for its last
tasks to finish, cost 8 queries a pull before (every shard, twice).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..models import TASK_SHARDS, Task

READ = 32  # ready tasks read per query: a few seconds of a large pool's pulls
MAX_AGE_S = 2.0  # a candidate not handed out by then is read again

# (batch, now ms, limit, first shard, band) -> (ready tasks, when the next pending one is due)
ReadReady = Callable[[str, int, int, int, int], tuple[list[Task], int | None]]
Key = tuple[str, int]  # (batch, band): a memory tier's band is read on its own (store/task_reads.py)


@dataclass
class _Read:
    at: float
    tasks: deque[Task]
    whole: bool = False  # every task ready at the read is in it (it found fewer than READ)
    next_due: int | None = None  # then: when the earliest pending task not ready yet falls due


@dataclass
class Candidates:
    """One process's ready tasks per batch and band. Thread-safe: `chalice local` serves pulls on
    threads, and a batch is read by one of them at a time while the others wait for it."""

    read_ready: ReadReady
    clock: Callable[[], float] = time.monotonic
    _reads: dict[Key, _Read] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reading: dict[Key, threading.Lock] = field(default_factory=dict)

    def take(self, batch_id: str, now_ms: int, band: int = 0) -> Task | None:
        """A ready task of `band` no other pull of this process was given, or None when a
        fresh read finds none ready."""
        key = (batch_id, band)
        task = self._pop(key)
        if task is not None:
            return task
        with self._reading_lock(key):
            task = self._pop(key)  # another thread may have read while this one waited
            if task is not None or self._nothing_ready(key, now_ms):
                return task
            tasks, next_due = self.read_ready(batch_id, now_ms, READ, random.randrange(TASK_SHARDS), band)
            random.shuffle(tasks)
            with self._lock:
                self._reads[key] = _Read(self.clock(), deque(tasks), len(tasks) < READ, next_due)
            return self._pop(key)

    def next_due(self, batch_id: str, band: int = 0) -> int | None:
        """When the earliest pending task of `band` not ready at the last read falls due;
        None when that read found none pending (or did not read them all)."""
        with self._lock:
            read = self._reads.get((batch_id, band))
            return read.next_due if read is not None and read.whole else None

    def _nothing_ready(self, key: Key, now_ms: int) -> bool:
        """The last read, still fresh, took every ready task, and none has fallen due since."""
        with self._lock:
            read = self._reads.get(key)
            return (read is not None and read.whole and self.clock() - read.at <= MAX_AGE_S
                    and (read.next_due is None or read.next_due > now_ms))

    def put_back(self, batch_id: str, task: Task, band: int = 0) -> None:
        """Return a candidate a pull took but could not use for a reason of its own (its
        machine was gone): the next pull gets it first."""
        with self._lock:
            read = self._reads.get((batch_id, band))
            if read is not None:
                read.tasks.appendleft(task)

    def forget(self, batch_id: str) -> None:
        """Drop a batch's candidates and its read locks, every band's (the batch ended or is gone)."""
        with self._lock:
            for key in [k for k in self._reads if k[0] == batch_id]:
                del self._reads[key]
            for key in [k for k in self._reading if k[0] == batch_id]:
                del self._reading[key]

    def __contains__(self, batch_id: object) -> bool:
        """Whether any read of this batch is kept."""
        with self._lock:
            return any(key[0] == batch_id for key in self._reads)

    def _pop(self, key: Key) -> Task | None:
        with self._lock:
            read = self._reads.get(key)
            if read is None or not read.tasks or self.clock() - read.at > MAX_AGE_S:
                return None
            return read.tasks.popleft()

    def _reading_lock(self, key: Key) -> threading.Lock:
        with self._lock:
            return self._reading.setdefault(key, threading.Lock())
