"""The default status store, ``"memory"``: the seed's semantics exactly.

A record lives while its task is queued or running and is dropped when the
task completes, so ``get_task_info`` returns ``None`` for a finished task and
memory never grows with history.  The record is the task handle itself.
"""

from __future__ import annotations

from collections.abc import Callable

from atasker.core.task import Task
from atasker.plugin.hookspecs import hookimpl
from atasker.plugin.protocols import StatusStoreType

__all__ = ["MemoryStore"]


class MemoryStore:
    """Live task records in a dict, keyed by task id."""

    def __init__(self, url: str = "memory://", supervisor: object = None) -> None:
        self._tasks: dict[int, Task] = {}

    def task_queued(self, task: Task) -> None:
        self._tasks[task.id] = task

    def task_started(self, task: Task) -> None:
        # The record is the live handle: its status is already 1.
        pass

    def task_finished(self, task: Task) -> None:
        self._tasks.pop(task.id, None)

    def get(self, task_id: int) -> Task | None:
        return self._tasks.get(task_id)

    def __len__(self) -> int:
        return len(self._tasks)

    def close(self) -> None:
        self._tasks.clear()


@hookimpl
def atasker_register_status_stores(register: Callable[[StatusStoreType], None]) -> None:
    """Register status store ``memory://`` (the default)."""
    register(StatusStoreType("memory", MemoryStore, doc="live records in memory, dropped on completion (default)"))
