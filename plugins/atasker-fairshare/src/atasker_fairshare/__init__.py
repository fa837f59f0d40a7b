"""atasker queue policy ``"fairshare"``: round-robin between task names.

Within one priority value, each task name has its own FIFO queue and names
take turns: after a task of name ``a`` starts, every other waiting name
starts one before ``a`` starts again.  Across priorities the default rules
hold: the most urgent waiting priority goes first and blocks the ones below
it, and ``Pool.may_start`` applies the reserves and the CRITICAL rule.

Selected by name only (``queue_policy="fairshare"`` or
``ATASKER_QUEUE_POLICY=fairshare``); installing it changes nothing.
"""

from __future__ import annotations

import bisect
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from typing import ClassVar

from atasker import TASK_STATUS_QUEUED, Pool, QueuePolicyType, Task, hookimpl, priority_band

__all__ = ["FairSharePolicy"]


class FairSharePolicy:
    """Strict priority between priorities, round-robin by name within one."""

    #: Nothing waiting -> admission is exactly Pool.may_start (see QueuePolicy).
    fast_path: ClassVar[bool] = True

    def __init__(self, pool: Pool | None = None) -> None:
        self._levels: dict[int, OrderedDict[str, deque[Task]]] = {}
        self._priorities: list[int] = []  # sorted, most urgent first
        self._counts: Counter[int] = Counter()
        self._live = 0

    def push(self, task: Task) -> None:
        level = self._levels.get(task.priority)
        if level is None:
            level = self._levels[task.priority] = OrderedDict()
            bisect.insort(self._priorities, task.priority)
        queue = level.get(task.name)
        if queue is None:
            queue = level[task.name] = deque()  # a new name joins the end of the turn
        queue.append(task)
        self._counts[task.priority] += 1
        self._live += 1

    def remove(self, task: Task) -> bool:
        # Lazy: the task's status is already -1; it is skipped when reached.
        self._counts[task.priority] -= 1
        self._live -= 1
        return True

    def pop_next(self, pool: Pool) -> Task | None:
        for priority in list(self._priorities):
            level = self._levels[priority]
            while level:
                name, queue = next(iter(level.items()))
                while queue and queue[0].status != TASK_STATUS_QUEUED:
                    queue.popleft()  # cancelled
                if not queue:
                    del level[name]
                    continue
                if not pool.may_start(priority_band(priority)):
                    return None  # the most urgent waiting task blocks the rest
                task = queue.popleft()
                if queue:
                    level.move_to_end(name)  # the next name takes its turn
                else:
                    del level[name]
                self._counts[priority] -= 1
                self._live -= 1
                return task
            del self._levels[priority]
            self._priorities.remove(priority)
        return None

    def waiting(self) -> dict[int, int]:
        return {p: n for p, n in sorted(self._counts.items()) if n}

    def tasks(self) -> list[Task]:
        return [
            t
            for p in self._priorities
            for queue in self._levels[p].values()
            for t in queue
            if t.status == TASK_STATUS_QUEUED
        ]

    def __len__(self) -> int:
        return self._live


@hookimpl
def atasker_register_queue_policies(register: Callable[[QueuePolicyType], None]) -> None:
    """Register queue policy ``"fairshare"``."""
    register(QueuePolicyType("fairshare", FairSharePolicy, doc="round-robin between task names within a priority"))
