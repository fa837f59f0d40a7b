"""Built-in plugin ``atasker.builtin.watchdog``: warn about tasks that wait
too long for a slot.

::

    atasker_task_waiting(task) ─▶ deque (queue order) ─▶ timer at
        joined the queue + timeout_warning ─▶ still queued? log WARNING,
        timeout_warning_func(task) ─▶ deque of the critical check ─▶ timer at
        joined the queue + timeout_critical ─▶ still queued? log CRITICAL,
        timeout_critical_func(task)

The limits and functions are the supervisor's ``timeout_warning``,
``timeout_critical``, ``timeout_warning_func`` and ``timeout_critical_func``
(the original atasker's names).  Only tasks that could not start at once
reach the watchdog, so a pool with room pays nothing for it; one timer call
is pending per check at a time.  Blocking the plugin turns the warnings off.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
import weakref
from typing import TYPE_CHECKING, TypeGuard

from atasker.core.lifecycle import after_fork_in_child
from atasker.core.task import TASK_STATUS_QUEUED, Task
from atasker.errors import SupervisorStoppedError
from atasker.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from atasker.core.supervisor import TaskSupervisor

__all__ = ["Watchdog"]

logger = logging.getLogger("atasker")


class Watchdog:
    """The start-time checks of one supervisor (extension ``"watchdog"``).

    A task's wait is measured from when it joined its queue and could not
    start (the ``atasker_task_waiting`` hook): a delayed task's delay is
    not waiting for a slot.
    """

    def __init__(self, supervisor: TaskSupervisor) -> None:
        self.supervisor = supervisor
        self._lock = threading.Lock()
        # (task, time.monotonic() it joined its queue), in queue order.
        self._watch: collections.deque[tuple[Task, float]] = collections.deque()
        self._watch_critical: collections.deque[tuple[Task, float]] = collections.deque()
        self._scheduled = {False: False, True: False}
        _forget_in_forked_child(self)

    def waiting(self, task: Task) -> None:
        """A task waits for a slot: check it once its warning limit is due."""
        limit = self.supervisor.timeout_warning
        if not _finite(limit):
            return
        with self._lock:
            now = time.monotonic()
            watch = self._watch
            # Started tasks leave from the front (queue order), so the deque
            # never holds many finished tasks.
            while watch and watch[0][0].status != TASK_STATUS_QUEUED:
                watch.popleft()
            watch.append((task, now))
            schedule = not self._scheduled[False]
            self._scheduled[False] = True
        if schedule:
            self._schedule(now + max(0.0, limit), False)

    def _schedule(self, when: float, critical: bool) -> None:
        try:
            self.supervisor.timer.call_at(when, self.check, critical)
        except (SupervisorStoppedError, RuntimeError):
            with self._lock:
                self._scheduled[critical] = False

    def check(self, critical: bool) -> None:
        """Timer callback: log (and call the function for) each overdue task."""
        sup = self.supervisor
        limit = sup.timeout_critical if critical else sup.timeout_warning
        critical_limit = sup.timeout_critical
        watch = self._watch_critical if critical else self._watch
        now = time.monotonic()
        overdue: list[tuple[Task, float]] = []
        next_at = None
        critical_at = None
        with self._lock:
            while watch and _finite(limit):
                task, joined = watch[0]
                if task.status != TASK_STATUS_QUEUED:
                    watch.popleft()
                    continue
                due = joined + limit
                if due > now:
                    next_at = due
                    break
                watch.popleft()
                overdue.append((task, joined))
                if not critical:
                    self._watch_critical.append((task, joined))
            self._scheduled[critical] = next_at is not None
            if overdue and not critical and not self._scheduled[True] and _finite(critical_limit):
                self._scheduled[True] = True
                critical_at = overdue[0][1] + critical_limit
        if next_at is not None:
            self._schedule(next_at, critical)
        if critical_at is not None:
            self._schedule(critical_at, True)
        func = sup.timeout_critical_func if critical else sup.timeout_warning_func
        level = logging.CRITICAL if critical else logging.WARNING
        for task, joined in overdue:
            logger.log(
                level,
                "task %s (%s, %s, priority %s) still waiting for a slot after %.3f s; "
                "increase the pool size or reserves",
                task.id,
                task.name,
                task.tt,
                task.priority,
                now - joined,
            )
            if func is not None:
                try:
                    func(task)
                except BaseException as exc:  # even SystemExit: the next overdue task is still reported
                    sup.report_internal_error(exc, "timeout function")

    def reset(self) -> None:
        """Forget every watched task (the supervisor stopped)."""
        with self._lock:
            self._watch.clear()
            self._watch_critical.clear()
            self._scheduled = {False: False, True: False}


def _finite(limit: object) -> TypeGuard[float]:
    """A limit the watchdog acts on: ``None`` and ``inf`` mean never."""
    return isinstance(limit, (int, float)) and math.isfinite(limit)


_watchdogs: weakref.WeakSet[Watchdog] = weakref.WeakSet()


def _forget_in_forked_child(watchdog: Watchdog) -> None:
    if not _watchdogs:
        after_fork_in_child(_after_fork)  # once per process that has watchdogs
    _watchdogs.add(watchdog)


def _after_fork() -> None:
    """A forked child: the parent's timer calls are gone, and another thread
    of the parent may have held a watchdog's lock at the fork."""
    for watchdog in list(_watchdogs):
        watchdog._lock = threading.Lock()
        watchdog.reset()


@hookimpl
def atasker_configure(supervisor: TaskSupervisor) -> None:
    """Add the ``"watchdog"`` extension."""
    supervisor.add_extension("watchdog", Watchdog(supervisor))


@hookimpl
def atasker_task_waiting(task: Task) -> None:
    """Watch a task that waits for a slot."""
    task.supervisor.extension("watchdog").waiting(task)


@hookimpl
def atasker_supervisor_stopped(supervisor: TaskSupervisor) -> None:
    """Forget the watched tasks."""
    supervisor.extension("watchdog").reset()
