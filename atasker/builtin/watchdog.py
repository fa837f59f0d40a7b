"""Built-in plugin ``atasker.builtin.watchdog``: warn about tasks that wait
too long for a slot.

::

    atasker_task_waiting(task) ─▶ deque (queue order) ─▶ timer at
        time_queued + timeout_warning ─▶ still queued? log WARNING,
        timeout_warning_func(task) ─▶ deque of the critical check ─▶ timer at
        time_queued + timeout_critical ─▶ still queued? log CRITICAL,
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
from typing import TYPE_CHECKING

from atasker.core.task import TASK_STATUS_QUEUED, Task
from atasker.errors import SupervisorStoppedError
from atasker.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from atasker.core.supervisor import TaskSupervisor

__all__ = ["Watchdog"]

logger = logging.getLogger("atasker")


class Watchdog:
    """The start-time checks of one supervisor (extension ``"watchdog"``)."""

    def __init__(self, supervisor: TaskSupervisor) -> None:
        self.supervisor = supervisor
        self._lock = threading.Lock()
        self._watch: collections.deque[Task] = collections.deque()
        self._watch_critical: collections.deque[Task] = collections.deque()
        self._scheduled = {False: False, True: False}

    def waiting(self, task: Task) -> None:
        """A task waits for a slot: check it once its warning limit is due."""
        limit = self.supervisor.timeout_warning
        if limit is None or not math.isfinite(limit):
            return
        with self._lock:
            watch = self._watch
            # Started tasks leave from the front (queue order), so the deque
            # never holds many finished tasks.
            while watch and watch[0].status != TASK_STATUS_QUEUED:
                watch.popleft()
            watch.append(task)
            schedule = not self._scheduled[False]
            self._scheduled[False] = True
        if schedule:
            self._schedule(time.monotonic() + max(0.0, limit), False)

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
        watch = self._watch_critical if critical else self._watch
        now = time.time()
        overdue: list[Task] = []
        next_at = None
        schedule_critical = False
        with self._lock:
            while watch:
                task = watch[0]
                if task.status != TASK_STATUS_QUEUED:
                    watch.popleft()
                    continue
                due = (task.time_queued or now) + limit
                if due > now:
                    next_at = due
                    break
                watch.popleft()
                overdue.append(task)
                if not critical:
                    self._watch_critical.append(task)
            self._scheduled[critical] = next_at is not None
            critical_limit = sup.timeout_critical
            if overdue and not critical and not self._scheduled[True] and math.isfinite(critical_limit):
                schedule_critical = self._scheduled[True] = True
        if next_at is not None:
            self._schedule(time.monotonic() + (next_at - now), critical)
        if schedule_critical:
            first = overdue[0].time_queued or now
            self._schedule(time.monotonic() + max(0.0, first + sup.timeout_critical - now), True)
        func = sup.timeout_critical_func if critical else sup.timeout_warning_func
        level = logging.CRITICAL if critical else logging.WARNING
        for task in overdue:
            logger.log(
                level,
                "task %s (%s, %s, priority %s) still waiting for a slot after %.3f s; "
                "increase the pool size or reserves",
                task.id,
                task.name,
                task.tt,
                task.priority,
                now - (task.time_queued or now),
            )
            if func is not None:
                try:
                    func(task)
                except Exception as exc:
                    sup.report_internal_error(exc, "timeout function")

    def reset(self) -> None:
        """Forget every watched task (the supervisor stopped)."""
        with self._lock:
            self._watch.clear()
            self._watch_critical.clear()
            self._scheduled = {False: False, True: False}


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
