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

# (batch, now ms, limit, first shard) -> (ready tasks, when the next pending one is due)
ReadReady = Callable[[str, int, int, int], tuple[list[Task], int | None]]


@dataclass
class _Read:
    at: float
    tasks: deque[Task]
    whole: bool = False  # every task ready at the read is in it (it found fewer than READ)
    next_due: int | None = None  # then: when the earliest pending task not ready yet falls due


@dataclass
class Candidates:
    """One process's ready tasks per batch. Thread-safe: `chalice local` serves pulls on
    threads, and a batch is read by one of them at a time while the others wait for it."""

    read_ready: ReadReady
    clock: Callable[[], float] = time.monotonic
    _reads: dict[str, _Read] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reading: dict[str, threading.Lock] = field(default_factory=dict)

    def take(self, batch_id: str, now_ms: int) -> Task | None:
        """A ready task no other pull of this process was given, or None when a fresh read
        finds none ready."""
        task = self._pop(batch_id)
        if task is not None:
            return task
        with self._reading_lock(batch_id):
            task = self._pop(batch_id)  # another thread may have read while this one waited
            if task is not None or self._nothing_ready(batch_id, now_ms):
                return task
            tasks, next_due = self.read_ready(batch_id, now_ms, READ, random.randrange(TASK_SHARDS))
            random.shuffle(tasks)
            with self._lock:
                self._reads[batch_id] = _Read(self.clock(), deque(tasks), len(tasks) < READ, next_due)
            return self._pop(batch_id)

    def next_due(self, batch_id: str) -> int | None:
        """When the earliest pending task not ready at the last read falls due; None when
        that read found none pending (or did not read them all)."""
        with self._lock:
            read = self._reads.get(batch_id)
            return read.next_due if read is not None and read.whole else None

    def _nothing_ready(self, batch_id: str, now_ms: int) -> bool:
        """The last read, still fresh, took every ready task, and none has fallen due since."""
        with self._lock:
            read = self._reads.get(batch_id)
            return (read is not None and read.whole and self.clock() - read.at <= MAX_AGE_S
                    and (read.next_due is None or read.next_due > now_ms))

    def put_back(self, batch_id: str, task: Task) -> None:
        """Return a candidate a pull took but could not use for a reason of its own (its
        machine was gone): the next pull gets it first."""
        with self._lock:
            read = self._reads.get(batch_id)
            if read is not None:
                read.tasks.appendleft(task)

    def forget(self, batch_id: str) -> None:
        """Drop a batch's candidates and its read lock (the batch ended or is gone)."""
        with self._lock:
            self._reads.pop(batch_id, None)
            self._reading.pop(batch_id, None)

    def __contains__(self, batch_id: object) -> bool:
        """Whether any read of this batch is kept."""
        with self._lock:
            return batch_id in self._reads

    def _pop(self, batch_id: str) -> Task | None:
        with self._lock:
            read = self._reads.get(batch_id)
            if read is None or not read.tasks or self.clock() - read.at > MAX_AGE_S:
                return None
            return read.tasks.popleft()

    def _reading_lock(self, batch_id: str) -> threading.Lock:
        with self._lock:
            return self._reading.setdefault(batch_id, threading.Lock())
