"""Task type ``"thread"`` (TT_THREAD): a thread pool shaped like CPython's.

::

    supervisor ──start(task)──▶ SimpleQueue ──▶ worker thread ──▶ task.func()
        ▲                                            │
        └────────── task_done(task, result) ◀────────┘

The supervisor admits a task only when the pool has room for its priority,
so the executor never queues more than it runs: it hands the task to an idle
worker or starts a new one (the pool grows for CRITICAL tasks).  A worker
that finishes reports with ``task_done(..., take_next=True)`` and runs the
task the supervisor admits next itself, so a busy pool needs no thread
hand-off per task (this is what makes it as fast as ThreadPoolExecutor,
whose workers also pull their next item without a wake-up).

Workers beyond ``pool_size`` exit after ``IDLE_TIMEOUT`` seconds idle, so a
burst of reserve or CRITICAL work does not leave threads behind.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from typing import TYPE_CHECKING

from ..hookspecs import hookimpl
from ..task import Task
from ..types import Pool, TaskType

if TYPE_CHECKING:
    from ..supervisor import TaskSupervisor

__all__ = ["TT_THREAD", "ThreadExecutor", "default_pool_size"]

TT_THREAD = "thread"

#: Seconds an idle worker beyond ``pool_size`` lingers before it exits.
IDLE_TIMEOUT = 2.0

_thread_numbers = itertools.count(1)


def default_pool_size() -> int:
    """``min(32, cpu_count + 4)``, as ``ThreadPoolExecutor``: I/O-bound work
    wants more threads than cores, but not without bound."""
    return min(32, (os.cpu_count() or 1) + 4)


class ThreadExecutor:
    """Runs thread tasks on a pool of reusable worker threads."""

    def __init__(self, supervisor: TaskSupervisor, pool: Pool) -> None:
        self._supervisor = supervisor
        self._pool = pool
        self._queue: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        # Idle workers; start() takes one to claim a worker.  A plain lock and
        # int: threading.Semaphore is pure Python and several times slower.
        self._idle = 0
        self._idle_lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._shutdown = False

    def validate(self, task: Task) -> None:
        pass

    def capacity(self) -> int | None:
        return None  # grows on demand: CRITICAL always gets a thread

    def resize(self, pool: Pool) -> None:
        pass  # extra idle threads retire by themselves

    def start(self, task: Task) -> None:
        self._queue.put(task)
        with self._idle_lock:
            if self._idle:
                self._idle -= 1
                return
        self._spawn()

    def _claim_idle(self) -> bool:
        with self._idle_lock:
            if self._idle:
                self._idle -= 1
                return True
            return False

    def cancel(self, task: Task) -> bool:
        return False  # a running Python thread cannot be interrupted

    def thread_count(self) -> int:
        """Worker threads alive now."""
        with self._lock:
            return len(self._threads)

    def _spawn(self) -> None:
        with self._lock:
            if self._shutdown:
                return
            thread = threading.Thread(
                target=self._work,
                name=f"atasker_{self._pool.tt}_{next(_thread_numbers)}",
                daemon=True,
            )
            self._threads.add(thread)
        thread.start()

    def _work(self) -> None:
        get = self._queue.get
        task_done = self._supervisor.task_done
        idle_lock = self._idle_lock
        me = threading.current_thread()
        try:
            while True:
                core = len(self._threads) <= self._pool.pool_size
                try:
                    task = get(timeout=None if core else IDLE_TIMEOUT)
                except queue.Empty:
                    # Retire only if no start() has claimed us meanwhile.
                    if self._claim_idle():
                        return
                    continue
                if task is None:
                    return
                # Run this task, then whatever the supervisor admits next on
                # this same thread (no hand-off while the pool is busy).
                while task is not None:
                    try:
                        result = task.func(*task.args, **task.kwargs)
                    except BaseException as exc:
                        task = task_done(task, exception=exc, take_next=True)
                    else:
                        task = task_done(task, result=result, take_next=True)
                    result = None
                with idle_lock:
                    self._idle += 1
        finally:
            with self._lock:
                self._threads.discard(me)

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()


@hookimpl
def atasker_register_task_types(register):
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
