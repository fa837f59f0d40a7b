"""Task type ``"thread"`` (TT_THREAD): a thread pool shaped like CPython's.

::

    supervisor ──start(task)──▶ SimpleQueue ──▶ worker thread ──▶ task.run()
        ▲                                            │
        └────────── task_done(task, result) ◀────────┘

The supervisor admits a task only when the pool has room for its priority,
so the executor never queues more than it runs: it hands the task to an idle
worker or starts a new one (the pool grows for CRITICAL tasks).  A worker
that finishes reports with ``task_done(..., take_next=True)`` and runs the
task the supervisor admits next itself, so a busy pool needs no thread
hand-off per task (this is what makes it as fast as ThreadPoolExecutor,
whose workers also pull their next item without a wake-up).

A worker beyond ``pool_size`` exits once it has been idle for about
:data:`IDLE_GRACE` seconds (one timer call retires every surplus worker
idle by then), so a burst of reserve or CRITICAL work leaves no threads
behind, while a busy pool that uses its reserves does not start a thread
per task; up to ``pool_size`` idle workers stay (for an unlimited pool, the
default size).
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from atasker.core.pool import Pool
from atasker.core.signals import unblock_signals
from atasker.core.task import DEFAULT_TASK_TYPE, Task
from atasker.errors import SupervisorStoppedError
from atasker.plugin.hookspecs import hookimpl
from atasker.plugin.protocols import BaseExecutor, TaskType

if TYPE_CHECKING:
    from atasker.core.supervisor import TaskSupervisor
    from atasker.core.task import SupervisorAPI

__all__ = ["IDLE_GRACE", "TT_THREAD", "ThreadExecutor", "ThreadPoolControl", "default_pool_size"]

TT_THREAD = DEFAULT_TASK_TYPE

#: Seconds a worker beyond the pool size may stay idle before it retires.
#: Retiring at once would start a thread for nearly every task of a busy
#: pool that runs into its reserves (workers there go idle between tasks).
IDLE_GRACE = 1.0

_thread_numbers = itertools.count(1)


def default_pool_size() -> int:
    """``min(32, cpu_count + 4)``, as ``ThreadPoolExecutor``: I/O-bound work
    wants more threads than cores, but not without bound."""
    return min(32, (os.cpu_count() or 1) + 4)


class ThreadExecutor(BaseExecutor):
    """Runs thread tasks on a pool of reusable worker threads."""

    def __init__(self, supervisor: SupervisorAPI, pool: Pool) -> None:
        super().__init__(supervisor, pool)
        self._pool = pool
        self._queue: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        # Idle workers; start() takes one to claim a worker.  A plain lock and
        # int: threading.Semaphore is pure Python and several times slower.
        self._idle = 0
        self._idle_lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._threads_changed = threading.Condition(self._lock)
        self._shutdown = False
        # Tasks with a timeout= that are running: task id -> its timer call.
        # Whoever pops the entry reports the task (dict.pop is atomic), so a
        # task that times out is reported once, by the timer.
        self._deadlines: dict[int, Any] = {}
        #: Threads still running a task whose timeout already failed its handle.
        self.overrunning = 0
        # A timer call to retire idle surplus workers is pending.
        self._retire_pending = False

    def capacity(self) -> int | None:
        """``None``: the pool grows on demand, so CRITICAL always gets a thread."""
        return None

    def resize(self, pool: Pool) -> None:
        """Nothing to do: extra idle threads retire by themselves."""

    def start(self, task: Task) -> None:
        with self._idle_lock:
            # Checked under the lock shutdown() sets it under: a task queued
            # here is ahead of the workers' exit sentinels, or refused.
            if self._shutdown:
                raise SupervisorStoppedError(
                    f"the {self._pool.tt} pool of supervisor {self.supervisor.name!r} is shut down; "
                    f"task {task.id} ({task.name}) was not started"
                )
            self._queue.put(task)
            if self._idle:
                self._idle -= 1
                return
        self._spawn()

    def _keep(self) -> int:
        """Threads kept idle: the pool size (the default size if unlimited)."""
        return self._pool.pool_size or default_pool_size()

    def cancel(self, task: Task) -> bool:
        """``False``: a running Python thread cannot be interrupted."""
        return False

    def thread_count(self) -> int:
        """Worker threads alive now."""
        with self._lock:
            return len(self._threads)

    def wait_threads(self, at_most: int, timeout: float | None = None) -> bool:
        """Wait until no more than *at_most* workers are alive; ``False`` on timeout."""
        with self._threads_changed:
            return self._threads_changed.wait_for(lambda: len(self._threads) <= at_most, timeout)

    def _spawn(self) -> None:
        # For a task start() queued before any shutdown: spawned even if one
        # began since, to run it.  Started under the lock, so that shutdown()
        # never sees (and joins) a thread that is not started yet.
        with self._lock:
            thread = threading.Thread(
                target=self._work,
                name=f"atasker_{self._pool.tt}_{next(_thread_numbers)}",
                daemon=True,
            )
            self._threads.add(thread)
            thread.start()
            if self._shutdown:
                # Possibly after shutdown() counted the threads: this one
                # needs an exit sentinel of its own (its task may go to a
                # thread that turned idle meanwhile).
                self._queue.put(None)

    def _work(self) -> None:
        # Started from whichever thread submitted (the timer, an aloop, the
        # process pool's manager block SIGINT): tasks' child processes
        # inherit this thread's mask and must get Ctrl-C.
        unblock_signals()
        get = self._queue.get
        task_done = self.supervisor.task_done
        idle_lock = self._idle_lock
        me = threading.current_thread()
        try:
            while True:
                task = get()
                if task is None:
                    return
                # Run this task, then whatever the supervisor admits next on
                # this same thread (no hand-off while the pool is busy).
                while task is not None:
                    if task.timeout is not None:
                        self._arm(task)
                    try:
                        result = task.run()
                    except BaseException as exc:
                        if task.timeout is not None and not self._disarm(task):
                            break  # timed out meanwhile: the timer reported it
                        task = task_done(task, exception=exc, take_next=True)
                    else:
                        if task.timeout is not None and not self._disarm(task):
                            break
                        task = task_done(task, result=result, take_next=True)
                    result = None
                if self._shutdown:
                    with self._lock:
                        self._threads.discard(me)
                        self._threads_changed.notify_all()
                    return
                # Out of work.  A thread beyond the pool size is retired by a
                # timer call rather than by an idle timeout of its own:
                # CPython 3.11's SimpleQueue.get(timeout=...) can block
                # forever when the timeout runs out while other threads take
                # the items (the remaining time goes negative, "no timeout").
                # Read without the lock first: a worker goes idle after every
                # task of a pool that is not saturated.
                if not self._retire_pending and len(self._threads) > self._keep():
                    with self._lock:
                        if not self._retire_pending and len(self._threads) > self._keep():
                            if not self._schedule_retire():
                                self._threads.discard(me)
                                self._threads_changed.notify_all()
                                return
                with idle_lock:
                    self._idle += 1
        finally:
            with self._lock:
                self._threads.discard(me)
                self._threads_changed.notify_all()

    def _schedule_retire(self) -> bool:
        """Ask the timer to retire idle surplus workers soon (``self._lock`` held).

        :returns: ``False`` if there is no timer (the supervisor stops).
        """
        try:
            self.supervisor.timer.call_later(IDLE_GRACE, self._retire)
        except Exception:  # SupervisorStoppedError, or a timer that stopped
            return False
        self._retire_pending = True
        return True

    def _retire(self) -> None:
        """Timer thread: one exit sentinel for each idle worker beyond the pool size."""
        with self._lock:
            self._retire_pending = False
            surplus = len(self._threads) - self._keep()
            with self._idle_lock:
                # Claimed like start() claims an idle worker: one queue item each.
                count = max(0, min(self._idle, surplus))
                self._idle -= count
        for _ in range(count):
            self._queue.put(None)

    def _arm(self, task: Task) -> None:
        assert task.timeout is not None
        self._deadlines[task.id] = self.supervisor.timer.call_later(task.timeout, self._time_out, task)

    def _disarm(self, task: Task) -> bool:
        """The task's function returned: ``True`` if it is this thread's to report."""
        handle = self._deadlines.pop(task.id, None)
        if handle is None:
            with self._lock:
                self.overrunning -= 1
            return False
        handle.cancel()
        return True

    def _time_out(self, task: Task) -> None:
        """Timer thread: the task's ``timeout=`` ran out while its function runs.

        A Python thread cannot be stopped: the handle fails now with
        :class:`TimeoutError` and frees its slot; the function runs on in
        its thread (counted in :attr:`overrunning`), and what it returns is
        dropped.
        """
        if self._deadlines.pop(task.id, None) is None:
            return  # it returned first
        with self._lock:
            self.overrunning += 1
        self.supervisor.task_done(
            task,
            exception=TimeoutError(
                f"thread task {task.id} ({task.name}) did not finish within its timeout of {task.timeout} s; "
                "its thread cannot be stopped and runs on (what the function returns is dropped)"
            ),
        )

    def statistics(self) -> dict[str, int]:
        """Worker threads alive, and those still running a task that timed out."""
        with self._lock:
            return {"threads": len(self._threads), "overrunning": self.overrunning}

    def shutdown(self, wait: bool = True) -> None:
        """Let every worker exit once idle; with *wait*, join them.

        A later :meth:`start` raises :class:`SupervisorStoppedError` (the
        supervisor fails that task with it).
        """
        with self._idle_lock:
            self._shutdown = True
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()


class ThreadPoolControl:
    """The supervisor's ``set_thread_pool`` (extension ``"thread"``)."""

    def __init__(self, supervisor: TaskSupervisor) -> None:
        self.supervisor = supervisor

    def set_thread_pool(
        self, pool_size: int | None = None, reserve_normal: int | None = None, reserve_high: int | None = None
    ) -> None:
        """:meth:`~atasker.TaskSupervisor.set_pool` for thread tasks (the original atasker's API)."""
        self.supervisor.set_pool(TT_THREAD, pool_size, reserve_normal, reserve_high)


@hookimpl
def atasker_configure(supervisor: TaskSupervisor) -> None:
    """Add the ``"thread"`` extension (``set_thread_pool``)."""
    supervisor.add_extension("thread", ThreadPoolControl(supervisor))


@hookimpl
def atasker_register_task_types(register: Callable[[TaskType], None]) -> None:
    """Register task type ``"thread"``: pool ``min(32, cpus + 4)``, reserves 5 and 5."""
    register(
        TaskType(
            TT_THREAD,
            ThreadExecutor,
            pool_size=default_pool_size,
            reserve_normal=5,
            reserve_high=5,
            doc="run the function in a pool thread",
        )
    )
