"""Task type ``"mp"`` (TT_MP): functions run in a crash-proof pool of worker processes.

::

    submitting thread               manager thread                 worker processes
    ─────────────────               ──────────────                 ────────────────
    submit ─▶ validate: pickle
    supervisor admits ─▶ start ──── idle worker: send ───────────▶ run ─┐
                          └─ none: pending ─▶ spawn a worker, send ─▶ run ─┤
                                    poll ◀──────────────── reply ───────┘
                                     ├─▶ worker idle ─▶ task_done (result | exception)
                                     ├─▶ sentinel: died ─▶ task_done(ProcessDiedError), replace
                                     └─▶ deadline: timeout ─▶ kill ─▶ TimeoutError, replace

* **Modules.**  This one: the task type plugin and :class:`MPExecutor`, the
  executor protocol the supervisor calls.  :mod:`~atasker.builtin.mp.manager`:
  worker processes and the manager thread.  :mod:`~atasker.builtin.mp.worker`:
  the loop each worker runs, the wire format, pickling.
  :mod:`~atasker.builtin.mp.window` / :mod:`~atasker.builtin.mp.pipes`:
  the window and placement / non-blocking pipe I/O.
* **Crash-proof.**  Every worker has its own pipes and runs one task at a
  time: a worker that dies (``os._exit``, SIGKILL, a segfault) fails only
  the task it runs, with :class:`~atasker.builtin.mp.api.ProcessDiedError`
  (a :class:`~atasker.WorkerDiedError`), and is replaced; tasks sent ahead
  to it go to another worker.
* **Event-driven.**  The manager thread sleeps in ``epoll`` on the reply
  pipes, the process sentinels and a wake-up pipe; deadlines are on the
  supervisor's timer: a reply, a death or a timeout is handled at once;
  nothing polls.
* **A small window, no queue of its own.**  The supervisor admits at most
  :meth:`capacity` tasks (one per worker), applying priorities and reserves
  first, so a started task always has a worker: an idle one, or a new one.
  While tasks are short, the window lets it admit up to ``WINDOW`` per
  worker (see :mod:`~atasker.builtin.mp.window`).  Workers start on first
  use; those beyond ``pool_size`` exit after ``idle_timeout``.
* **Pickled at submission**, so an unpicklable function or argument raises
  :class:`~atasker.builtin.mp.api.TaskPicklingError` in the submitting thread, and
  the arguments are captured at that moment.  Functions and classes from
  ``__main__``, lambdas and closures go by value (cloudpickle).
* **Callbacks** run in the manager thread (as ``multiprocessing.Pool``
  callbacks run in its result thread): keep them short.
"""

from __future__ import annotations

import inspect
import os
import pickle
import threading
import types
import weakref
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from atasker.builtin.mp.api import TT_MP, ProcessPoolControl, TaskPicklingError
from atasker.builtin.mp.manager import WorkerManager
from atasker.builtin.mp.options import check_options, default_start_method, start_context
from atasker.builtin.mp.spawn import Worker
from atasker.builtin.mp.worker import PLAIN_TYPES, PROTOCOL, describe, dumps
from atasker.core import lifecycle
from atasker.core.pool import Pool
from atasker.core.task import Task
from atasker.plugin.hookspecs import hookimpl
from atasker.plugin.protocols import TaskType

if TYPE_CHECKING:
    from atasker.core.supervisor import TaskSupervisor
    from atasker.core.task import SupervisorAPI

__all__ = ["TT_MP", "MPExecutor", "check_options", "cpu_count", "default_start_method"]


#: Extra workers for NORMAL and HIGH tasks.  Processes are costly (memory,
#: start-up) and CPU-bound work gains nothing from oversubscribing cores, so
#: the reserves are smaller than the thread pool's 5/5: two workers each are
#: enough for urgent tasks not to wait behind a pool full of LOW work.
DEFAULT_RESERVE_NORMAL = 2
DEFAULT_RESERVE_HIGH = 2
#: Seconds an idle worker beyond ``pool_size`` lives before it exits.
IDLE_TIMEOUT = 10.0


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class MPExecutor(WorkerManager):
    """Runs process tasks for one supervisor on worker processes it manages.

    Created by the supervisor on first use of ``TT_MP``; options come from
    :meth:`~atasker.TaskSupervisor.create_mp_pool`.  Thread-safe.
    """

    def __init__(self, supervisor: SupervisorAPI, pool: Pool) -> None:
        self._pool = pool
        self._start_method = ""
        self._init = None
        self._max_tasks = None
        self._idle_timeout = IDLE_TIMEOUT
        # A copy of this executor in a forked child owns nothing: no manager
        # thread, and descriptors that belong to the parent.
        self._forked = False
        self._refresh_sizes()
        self._init_manager(supervisor)
        control: ProcessPoolControl = supervisor.extension("mp", "process tasks")
        self.configure(control.options)
        _executors.add(self)

    # ------------------------------------------------------------ configuration

    def configure(self, options: Mapping[str, Any]) -> None:
        """Apply ``create_mp_pool`` options; workers started with others are replaced."""
        check_options(options)
        ctx = start_context(options.get("start_method"))
        initializer = options.get("initializer")
        init = None
        if initializer is not None:
            initargs = tuple(options.get("initargs") or ())
            try:
                init = dumps((initializer, initargs))
            except Exception as exc:
                raise TaskPicklingError(
                    f"the initializer of the process pool ({describe(initializer)}) or its arguments "
                    f"cannot be pickled: {type(exc).__name__}: {exc}"
                ) from exc
        if ctx.get_start_method() == "fork":
            # A forked worker inherits the module locks other threads hold at
            # that moment; a module the worker may need and this process
            # imports lazily could be half-imported then, and the worker would
            # deadlock on it.  Import it before any fork.
            import cloudpickle  # noqa: F401
        with self._lock:
            changed = bool(self._start_method) and (ctx.get_start_method() != self._start_method or init != self._init)
            self._ctx = ctx
            self._start_method = ctx.get_start_method()
            self._init = init
            self._max_tasks = options.get("max_tasks_per_child")
            self._idle_timeout = options.get("idle_timeout") or IDLE_TIMEOUT
            if not changed:
                return
            self._generation += 1
            victims = self._take_idle(len(self._idle))
        self._retire(victims)

    @property
    def start_method(self) -> str:
        """The start method of new workers: ``forkserver``, ``spawn`` or ``fork``."""
        return self._start_method

    def capacity(self) -> int:
        """Worker processes at most: ``pool_size`` (0: the CPU count) plus both reserves."""
        return self._capacity

    def _refresh_sizes(self) -> None:
        pool = self._pool
        size = pool.pool_size or cpu_count()
        self._capacity = max(1, size + pool.reserve_normal + pool.reserve_high)
        self._target = min(size, self._capacity)

    def resize(self, pool: Pool) -> None:
        """Retire idle workers beyond the new capacity (busy ones when their task ends)."""
        with self._lock:
            self._refresh_sizes()
            victims = self._take_idle(len(self._workers) - self._retiring - self._capacity)
            if len(self._workers) - self._retiring > self._target:
                for w in self._idle:
                    if not w.idle_armed:
                        self._arm_idle(w)
        self._retire(victims)
        self._wake()

    def prestart(self) -> None:
        """Start ``pool_size`` workers now (in the background), so first tasks do not wait."""
        with self._lock:
            self._spawn_requests = max(self._spawn_requests, self._target - len(self._workers))
        self._wake()

    # ------------------------------------------------------------ executor protocol

    def validate(self, task: Task) -> None:
        """Pickle the task now; raise :class:`TaskPicklingError` naming what cannot be pickled."""
        func, args, kwargs = task.func, task.args, task.kwargs
        payload = (task.id, func, args, kwargs)
        if (
            type(func) is types.FunctionType
            and func.__module__ != "__main__"
            and not kwargs
            and PLAIN_TYPES.issuperset(map(type, args))  # no generator: this runs per submit
        ):
            # The common case: a module-level function and plain arguments,
            # for which the plain C pickler writes the same bytes as dumps().
            try:
                task.executor_data = pickle.dumps(payload, PROTOCOL)
                return
            except Exception:
                pass  # a lambda or a closure: by value, below
        try:
            task.executor_data = dumps(payload)
        except Exception as exc:
            raise _pickling_error(task, exc) from exc

    def start(self, task: Task) -> None:
        """Send the task to a worker with room, or have the manager thread start one for it."""
        if self._forked:
            raise RuntimeError("this process pool belongs to the parent process (this is a forked child)")
        with self._lock:
            w = self._place()
            if w is None:
                if self._closing and not self._thread.is_alive():
                    raise RuntimeError("the process pool is shut down")
                self._pending.append(task)
            else:
                self._assign(w, task)
        if w is None:
            self._wake()
        else:
            self._flush_out(w)

    def cancel(self, task: Task) -> bool:
        """Stop a started task; ``True`` if it will end cancelled.

        A running task's worker is killed (and replaced); a task sent ahead
        to a worker and not started is skipped there, and the worker lives.
        """
        skip = None
        with self._lock:
            if task in self._pending:
                self._pending.remove(task)
            else:
                w = task.executor_data
                if not isinstance(w, Worker) or w.dead:
                    return False
                if w.task is task:
                    if w.fate is None:
                        w.fate = "cancel"
                        self._kill(w)
                    return bool(w.fate == "cancel")
                if not any(t is task for t, _ in w.ahead):
                    return False
                if task.id in w.skipping:
                    return True  # skip requested already
                w.skipping.add(task.id)
                self._queue(w, task.id, b"")  # a skip request: it ends cancelled when the worker answers
                skip = w
        if skip is not None:
            self._flush_out(skip)
            return True
        self._count("cancelled")
        self._supervisor.task_done(task, cancelled=True)
        return True

    def shutdown(self, wait: bool = True) -> None:
        """Ask workers to exit (busy ones after their task); with *wait*, until all have."""
        if self._forked:
            return  # the parent's workers are the parent's business
        with self._lock:
            self._closing = True
            victims = self._take_idle(len(self._idle))
        self._retire(victims)
        self._wake()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def kill_workers(self, wait: float = 5.0) -> None:
        """Kill every worker now; their tasks end cancelled.  For interpreter exit.

        :param wait: seconds to wait for the manager thread to see them die.
        """
        with self._lock:
            self._closing = self._killing = True
            for w in self._workers:
                if w.task is not None and w.fate is None:
                    w.fate = "cancel"
                self._kill(w)
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(wait)

    # ------------------------------------------------------------ information

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers."""
        with self._lock:
            return sorted(w.pid for w in self._workers)

    def wait_workers(self, count: int, timeout: float | None = None, exclude: Collection[int] = ()) -> bool:
        """Wait until exactly *count* workers are alive, ready and not retiring.

        For warming up (``create_mp_pool`` then ``wait_workers(pool_size)``)
        and for tests.  With *exclude*, also until none of those pids is
        among them (a dead worker has been replaced).  Returns ``False`` if
        *timeout* passed first.
        """

        def settled() -> bool:
            live = [w for w in self._workers if not w.retiring]
            return len(live) == count and all(w.ready and w.pid not in exclude for w in live)

        with self._changed:
            return self._changed.wait_for(settled, timeout)

    def statistics(self) -> dict[str, Any]:
        """Workers (live, idle, busy, retiring), pending tasks, the window and counters.

        ``sent_ahead``: tasks sent to a worker behind the one it runs;
        ``window``: tasks a worker may hold now (1, or ``WINDOW`` while
        tasks are short).  Counters: ``spawned`` workers, ``died`` (tasks
        whose worker died, including kills for a timeout or a cancel),
        ``timeouts``, ``cancelled``, ``resent`` (tasks sent ahead to a
        worker that died before starting them, sent to another).
        """
        with self._lock:
            return {
                "start_method": self._start_method,
                "workers": len(self._workers),
                "idle": len(self._idle),
                "busy": sum(1 for w in self._workers if w.task is not None),
                "sent_ahead": sum(len(w.ahead) for w in self._workers),
                "window": self._window,
                "retiring": self._retiring,
                "pending": len(self._pending),
                "capacity": self._capacity,
                **self._stats,
            }


_executors: weakref.WeakSet[MPExecutor] = weakref.WeakSet()


def _disown_in_child() -> None:
    for executor in list(_executors):
        executor._forked = True


lifecycle.after_fork_in_child(_disown_in_child)


def _kill_leftovers() -> None:
    """At exit: kill workers whose task outlived ``stop(wait=N)``.

    Workers are not daemonic (a task may start processes of its own), so
    ``multiprocessing`` joins them at exit: a task stuck forever would make
    the interpreter hang.  Runs after the supervisors stopped at exit, before
    ``multiprocessing``'s own exit function joins workers.  (An orderly
    ``stop()`` -- also the one the supervisor does at exit -- leaves nothing
    for this to do.)
    """
    for executor in list(_executors):
        if not executor._forked:
            # On a second Ctrl-C, the program exits at once: kill, do not wait.
            executor.kill_workers(wait=0.2 if lifecycle.aborting() else 5.0)


lifecycle.at_exit(_kill_leftovers)


def _pickling_error(task: Task, exc: Exception) -> TaskPicklingError:
    """Name what in a task cannot be pickled (the function, which argument)."""
    why = f"{type(exc).__name__}: {exc}"
    what = None
    try:
        dumps(task.func)
    except Exception as e:
        # A plugin's wrapper (atasker_wrap_task_call) keeps the user's function as __wrapped__.
        what, why = f"its function ({describe(inspect.unwrap(task.func))})", f"{type(e).__name__}: {e}"
    else:
        for i, arg in enumerate(task.args):
            try:
                dumps(arg)
            except Exception as e:
                what, why = f"positional argument {i} ({describe(arg)})", f"{type(e).__name__}: {e}"
                break
        else:
            for key, value in task.kwargs.items():
                try:
                    dumps(value)
                except Exception as e:
                    what, why = f"keyword argument {key!r} ({describe(value)})", f"{type(e).__name__}: {e}"
                    break
    return TaskPicklingError(
        f"process task {task.name!r} cannot be sent to a worker process: {what or 'it'} cannot be pickled: {why}"
    )


@hookimpl
def atasker_configure(supervisor: TaskSupervisor) -> None:
    """Add the ``"mp"`` extension (``create_mp_pool``, ``set_mp_pool``)."""
    supervisor.add_extension("mp", ProcessPoolControl(supervisor))


@hookimpl
def atasker_register_task_types(register: Callable[[TaskType], None]) -> None:
    """Register task type ``"mp"``: one worker per CPU, reserves 2 and 2."""
    register(
        TaskType(
            TT_MP,
            MPExecutor,
            pool_size=cpu_count,
            reserve_normal=DEFAULT_RESERVE_NORMAL,
            reserve_high=DEFAULT_RESERVE_HIGH,
            doc="run the function in a worker process (crash-proof pool; forkserver by default)",
        )
    )
