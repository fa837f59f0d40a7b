"""The window: how many tasks a worker is sent at once, and which worker gets a task.

While tasks are short (each under :data:`PIPELINE_BELOW`, reply to reply),
a worker is sent up to :data:`WINDOW` tasks at once -- the one it runs and
the next ones -- so that it never waits for the parent between two tasks;
the pool's admission limits grow by the same factor (``Pool.set_window``).
A task that takes longer closes the window at once: long tasks go one per
worker, so that none waits behind another while a worker is free, and the
supervisor's queue (priorities) decides what runs next.  A task is never
sent ahead to a worker whose current task has run longer than
``PIPELINE_BELOW``.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import TYPE_CHECKING, Any

from atasker.builtin.mp.spawn import Worker

if TYPE_CHECKING:
    from collections.abc import Callable

    from atasker.core.task import Task

__all__ = ["PIPELINE_BELOW", "SHORT_STREAK", "WINDOW", "WindowPolicy"]

#: Most tasks a worker holds at once while the window is open: the one it
#: runs and two behind it.  Measured with bench/bench_mp.py (trivial tasks,
#: 2 workers); each task more is one more that a HIGH task may find ahead
#: of it on a worker (the supervisor's queue orders only what was not sent).
WINDOW = 3
#: A task shorter than this (seconds, reply to reply) counts as short.
PIPELINE_BELOW = 0.001
#: Consecutive short tasks before the window opens.
SHORT_STREAK = 16


class WindowPolicy:
    """Placement and the window; a part of :class:`~atasker.builtin.mp.manager.WorkerManager`."""

    _lock: threading.Lock
    _workers: set[Worker]
    _idle: list[Worker]
    _pending: collections.deque[Task]
    _retiring: int
    _target: int
    _capacity: int
    _pool: Any
    _window: int
    _streak: int
    _park_later: bool
    _park: Callable[[Worker], bool]
    _arm_timeout: Callable[[Worker, Task], bool]

    def _place(self) -> Worker | None:
        """The worker to send a task to now (``_lock`` held), or ``None``: start one.

        An idle worker first; then, while the pool has fewer workers than
        ``pool_size``, none (a new worker is better than a queue); then,
        with the window open, the least loaded worker with room whose
        current task started less than ``PIPELINE_BELOW`` ago -- never one
        busy with a long task, behind which the new task would wait.
        """
        if self._idle:
            return self._idle.pop()
        if self._window == 1 or len(self._workers) - self._retiring < self._target:
            return None
        best = None
        room = self._window
        young = time.monotonic() - PIPELINE_BELOW
        for w in self._workers:
            n = w.load()
            if n < room and w.head_since > young and w.fate is None and not w.retiring and w.task is not None:
                best, room = w, n
        return best

    def _take_pending(self) -> Task:
        """The most urgent pending task, first come first (``_lock`` held).

        Pending tasks are few (the windows' worth at most); a more urgent
        one admitted later must not wait behind them.
        """
        pending = self._pending
        best = pending[0]
        for task in pending:
            if task.priority < best.priority:
                best = task
        if best is pending[0]:
            pending.popleft()
        else:
            pending.remove(best)
        return best

    def _may_spawn(self) -> bool:
        """Whether the most urgent pending task may have a new worker (``_lock`` held).

        Up to ``pool_size`` workers for any priority, the reserves for the
        priorities they serve -- the pool's limits counted in workers, not
        in tasks -- and ``capacity`` at most.
        """
        band = min(t.band for t in self._pending)
        pool = self._pool
        allowed = min(self._capacity, pool.limit(band) / pool.window)
        return bool(len(self._workers) - self._retiring < allowed)

    def _set_window(self, window: int) -> None:
        self._window = window
        self._pool.set_window(window)

    def _learn(self, seconds: float) -> None:
        """Open or close the window from how long a task took (``_lock`` held)."""
        if seconds < PIPELINE_BELOW:
            self._streak += 1
            if self._streak == SHORT_STREAK and self._window != WINDOW:
                self._set_window(WINDOW)
        else:
            self._streak = 0
            if self._window != 1:
                self._set_window(1)

    def _unqueue(self, w: Worker, key: int) -> Task | None:
        """Drop the task *key* from *w*'s window (``_lock`` held); ``None`` if not there."""
        w.skipping.discard(key)
        if w.task is not None and w.task.id == key:  # taken for the head a moment too early
            task = w.task
            if w.ahead:
                w.task, _ = w.ahead.popleft()
                w.head_since = time.monotonic()
                if w.task.timeout is not None and w.fate is None and w.ready:
                    self._arm_timeout(w, w.task)
            else:
                w.task = None
                if w.fate is None:
                    self._park_later = self._park(w)
            return task
        for entry in w.ahead:
            if entry[0].id == key:
                w.ahead.remove(entry)
                return entry[0]
        return None
