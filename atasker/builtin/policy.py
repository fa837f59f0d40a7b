"""The default queue policy, ``"priority"``.

Strict priority order (lower value first), FIFO within a priority.  The task
at the head of the queue decides: if its priority may not start now (the pool
is full for it), nothing behind it starts either -- a waiting higher-priority
task blocks lower ones, so reserves cannot be eaten by a stream of LOW work.

A binary heap keyed on ``(priority, sequence)`` gives O(log n) push and pop
for any integer priority.  Cancelled tasks are removed lazily (skipped when
they reach the head) so that ``cancel()`` is O(1); the heap is rebuilt when
dead entries outnumber live ones.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable
from typing import ClassVar

from atasker.core.pool import Pool
from atasker.core.task import TASK_STATUS_QUEUED, Task
from atasker.plugin.hookspecs import hookimpl
from atasker.plugin.protocols import QueuePolicyType

__all__ = ["PriorityPolicy"]

# Below this many dead entries a rebuild is not worth its cost.
_COMPACT_MIN_DEAD = 1024


class PriorityPolicy:
    """Strict priority, FIFO within a priority, reserves per priority band."""

    __slots__ = ("_counts", "_dead", "_heap", "_live", "_seq")

    #: With nothing waiting, this policy admits exactly what Pool.may_start
    #: allows, so the supervisor may skip the push/pop round trip.
    fast_path: ClassVar[bool] = True

    def __init__(self, pool: Pool | None = None) -> None:
        self._heap: list[tuple[int, int, Task]] = []
        self._seq = itertools.count()
        self._counts: Counter[int] = Counter()
        self._live = 0
        self._dead = 0

    def push(self, task: Task) -> None:
        heapq.heappush(self._heap, (task.priority, next(self._seq), task))
        self._counts[task.priority] += 1
        self._live += 1

    def remove(self, task: Task) -> bool:
        # The supervisor has already set the task's status to canceled; the
        # entry stays in the heap and is skipped when it reaches the head.
        self._counts[task.priority] -= 1
        self._live -= 1
        self._dead += 1
        if self._dead > _COMPACT_MIN_DEAD and self._dead > self._live:
            self._heap = [e for e in self._heap if e[2].status == TASK_STATUS_QUEUED]
            heapq.heapify(self._heap)
            self._dead = 0
        return True

    def pop_next(self, pool: Pool) -> Task | None:
        heap = self._heap
        while heap:
            task = heap[0][2]
            if task.status != TASK_STATUS_QUEUED:
                heapq.heappop(heap)
                self._dead -= 1
                continue
            if not pool.may_start(task.band):
                return None
            heapq.heappop(heap)
            self._counts[task.priority] -= 1
            self._live -= 1
            return task
        return None

    def waiting(self) -> dict[int, int]:
        return {p: n for p, n in sorted(self._counts.items()) if n}

    def tasks(self) -> list[Task]:
        """The waiting tasks, most urgent first."""
        return [e[2] for e in sorted(self._heap) if e[2].status == TASK_STATUS_QUEUED]

    def __len__(self) -> int:
        return self._live


@hookimpl
def atasker_register_queue_policies(register: Callable[[QueuePolicyType], None]) -> None:
    """Register queue policy ``"priority"`` (the default)."""
    register(
        QueuePolicyType(
            "priority",
            PriorityPolicy,
            doc="strict priority, FIFO within a priority, per-priority reserves (default)",
        )
    )
