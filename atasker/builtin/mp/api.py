"""Process tasks: ``create_mp_pool``, ``set_mp_pool``, ``co_mp_apply``.

The task type itself (``TT_MP``, the worker processes) is the built-in plugin
:mod:`atasker.builtin.mp`; this module holds what users call:

* :meth:`ProcessPoolControl.create_mp_pool` / :meth:`ProcessPoolControl.set_mp_pool`
  -- the extension ``"mp"`` behind the supervisor's methods of those names;
* :func:`co_mp_apply` -- await a process task from a coroutine;
* the errors a process task can end with besides its own exception:
  :class:`~atasker.WorkerDiedError` (its subclass :class:`ProcessDiedError`),
  :class:`TaskPicklingError`, and :class:`RemoteTraceback`, chained as
  ``__cause__`` of an exception raised in a worker.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from atasker.builtin.compat import deprecated
from atasker.builtin.mp.options import check_options
from atasker.core.supervisor import default_supervisor
from atasker.core.task import TaskSpec
from atasker.errors import AtaskerError, WorkerDiedError
from atasker.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from atasker.core.supervisor import TaskSupervisor

__all__ = [
    "ProcessDiedError",
    "ProcessPoolControl",
    "RemoteTraceback",
    "TaskPicklingError",
    "co_mp_apply",
]

TT_MP = "mp"

#: ``create_mp_pool`` keywords besides the pool sizes (see its docstring).
_POOL_OPTIONS = frozenset({"start_method", "initializer", "initargs", "max_tasks_per_child", "idle_timeout"})
_SIZE_OPTIONS = ("pool_size", "reserve_normal", "reserve_high")
#: The original atasker passed these on to ``multiprocessing.Pool``.
_ALIASES = {"processes": "pool_size", "maxtasksperchild": "max_tasks_per_child", "context": "start_method"}


class ProcessDiedError(WorkerDiedError):
    """The worker process running a task died (``os._exit``, a signal, a crash).

    Only the task it was running fails; the worker is replaced.

    :ivar pid: the process id of the dead worker.
    :ivar exitcode: its exit code; ``-N`` when killed by signal ``N``.
    """

    def __init__(self, message: str, pid: int | None = None, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode

    def __reduce__(self) -> Any:
        return (type(self), (str(self), self.pid, self.exitcode))


class TaskPicklingError(AtaskerError, pickle.PicklingError, TypeError):
    """A process task's function, arguments, result or exception could not be pickled.

    Raised by ``submit`` / ``background_task(...)()`` for the function and the
    arguments (the message says which argument, and why); set on the task's
    handle for a result, or an exception, that cannot travel back from the
    worker.  It is a :class:`TypeError` and a :class:`pickle.PicklingError`,
    so code that catches what :mod:`pickle` raises keeps working.
    """


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised in a worker process.

    Chained as ``__cause__`` of the exception a process task raised, so that
    tracebacks show where it happened in the worker; the text is also in
    :attr:`tb`.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb.rstrip()}\n"""'


class ProcessPoolControl:
    """The process pool's options for one supervisor (extension ``"mp"``).

    :attr:`options` are what :meth:`create_mp_pool` set besides the sizes;
    the executor reads them when it is created.
    """

    def __init__(self, supervisor: TaskSupervisor) -> None:
        self.supervisor = supervisor
        self._lock = threading.Lock()
        #: ``create_mp_pool`` options other than the sizes (merged).
        self.options: dict[str, Any] = {}
        #: Start ``pool_size`` workers when the supervisor starts (see :func:`prestart_sized_pool`).
        self.prestart = False
        #: ``create_mp_pool`` or ``set_mp_pool`` was called (the original's ``mp_pool`` existed).
        self.configured = False

    def create_mp_pool(self, **kwargs: Any) -> None:
        """Configure the process pool of ``TT_MP`` tasks.

        The pool also creates itself with defaults on first use; call this to
        change them.  If the supervisor is running, ``pool_size`` workers are
        started now (in the background); otherwise they start on first use.
        Workers already running with other options are replaced: idle ones at
        once, busy ones when their task ends.

        :keyword pool_size: worker processes for any priority (default: the
            number of CPUs this process may use); ``processes`` is accepted
            as in ``multiprocessing.Pool``.
        :keyword reserve_normal: extra workers for NORMAL and above (2).
        :keyword reserve_high: extra workers for HIGH and above (2).
        :keyword start_method: ``"forkserver"`` (default where available),
            ``"spawn"`` or ``"fork"``, or a ``multiprocessing`` context;
            default also from ``ATASKER_MP_START_METHOD``.  ``fork`` is fast
            but unsafe in a process with threads (and the supervisor has
            some): a lock held by another thread at fork time stays locked in
            the worker forever.
        :keyword initializer: ``initializer(*initargs)`` runs in each worker
            when it starts; if it raises, tasks sent to that worker fail with
            :class:`ProcessDiedError` naming the error.
        :keyword initargs: arguments of *initializer*.
        :keyword max_tasks_per_child: replace a worker after this many tasks
            (``maxtasksperchild``; default: never).
        :keyword idle_timeout: seconds an idle worker beyond ``pool_size``
            lives before it exits (default 10).
        :keyword prestart: called before ``start()``: start ``pool_size``
            workers with the supervisor and wait for them, as the original
            atasker's ``multiprocessing.Pool`` did (default ``True``);
            ``False``: they start on first use.
        :raises TypeError: an unknown keyword.
        :raises ValueError: a bad value (unknown start method, negative size, ...).
        """
        prestart = bool(kwargs.pop("prestart", True))
        options: dict[str, Any] = {}
        for key, value in kwargs.items():
            key = _ALIASES.get(key, key)
            if key not in _POOL_OPTIONS and key not in _SIZE_OPTIONS:
                known = ", ".join(sorted({*_POOL_OPTIONS, *_SIZE_OPTIONS, *_ALIASES}))
                raise TypeError(f"create_mp_pool() got an unexpected keyword {key!r}; known: {known}")
            options[key] = value
        sizes = {key: options.pop(key) for key in _SIZE_OPTIONS if key in options}
        check_options(options)
        sup = self.supervisor
        with self._lock:
            self.options = merged = {**self.options, **options}
        if sizes:
            sup.set_pool(TT_MP, **sizes)
        self.prestart = prestart and not sup.is_active()
        self.configured = True
        if sup.is_active():
            executor = sup.executor(TT_MP)
            # The "mp" executor is an MPExecutor, not imported here: its module imports this one.
            executor.configure(merged)  # type: ignore[attr-defined]  # see above
            executor.prestart()  # type: ignore[attr-defined]  # see above

    def set_mp_pool(
        self,
        pool_size: int | None = None,
        reserve_normal: int | None = None,
        reserve_high: int | None = None,
    ) -> None:
        """Change the process pool size and reserves, also while running.

        Arguments left ``None`` keep their value.  Growing the pool starts
        waiting tasks at once (workers start as they are needed); shrinking
        it retires idle workers now and busy ones when their task ends.
        ``pool_size=0`` means one worker per CPU, usable by any priority.
        Called before ``start()``, the workers start with the supervisor
        (see ``create_mp_pool(prestart=...)``).
        """
        self.supervisor.set_pool(TT_MP, pool_size, reserve_normal, reserve_high)
        self.prestart = self.prestart or not self.supervisor.is_active()
        self.configured = True

    @property
    def mp_pool(self) -> Any:
        """Deprecated (the original's ``multiprocessing.Pool`` attribute): the
        process pool's executor once ``create_mp_pool`` or ``set_mp_pool``
        made the pool and the supervisor runs, else ``None``.  Use ``supervisor.executor(TT_MP)``."""
        deprecated("supervisor.mp_pool", "supervisor.executor(TT_MP)")
        sup = self.supervisor
        return sup.executor(TT_MP) if sup.is_active() and self.configured else None


#: Seconds ``start()`` waits at most for the workers of a pool sized before it.
PRESTART_TIMEOUT = 10.0


@hookimpl
def atasker_supervisor_started(supervisor: TaskSupervisor) -> None:
    """Prestart the process pool if it was sized before ``start()`` (see :func:`prestart_sized_pool`)."""
    prestart_sized_pool(supervisor)


def prestart_sized_pool(supervisor: TaskSupervisor) -> None:
    """Start ``pool_size`` workers now and wait for them, if the pool was sized before ``start()``.

    As the original's ``set_mp_pool()`` forked its ``multiprocessing.Pool``
    at once: the first process tasks (an interval worker's first ticks) do
    not wait for a worker to start.
    """
    control: ProcessPoolControl = supervisor.extension("mp", "process tasks")
    if not control.prestart:
        return
    executor = supervisor.executor(TT_MP)
    executor.prestart()  # type: ignore[attr-defined]  # an MPExecutor, see create_mp_pool
    pool = supervisor.get_info()["task_types"][TT_MP]
    # capacity() is pool_size (0: the CPU count) plus both reserves.
    size = executor.capacity() - pool["reserve_normal"] - pool["reserve_high"]
    executor.wait_workers(max(1, size), PRESTART_TIMEOUT)  # type: ignore[attr-defined]  # see above


async def co_mp_apply(
    f: Callable[..., Any],
    args: tuple[Any, ...] | list[Any] = (),
    kwargs: dict[str, Any] | None = None,
    priority: int | None = None,
    delay: float | None = None,
    supervisor: TaskSupervisor | None = None,
    tt: str = TT_MP,
) -> Any:
    """Run ``f(*args, **kwargs)`` as a process task and await its result.

    Awaitable from any running event loop; the loop is never blocked while
    the task waits or runs.  Cancelling the awaiting coroutine cancels the
    task (a running one is stopped: its worker is killed and replaced).

    :param f: the function; it must be picklable (any importable function,
        and also lambdas, closures and functions defined in ``__main__``).
    :param args: positional arguments.
    :param kwargs: keyword arguments.
    :param priority: task priority (default ``TASK_NORMAL``).
    :param delay: seconds to wait before the task joins its queue.
    :param supervisor: the supervisor (default ``atasker.task_supervisor``).
    :param tt: the task type: process tasks by default, or another that runs
        a function elsewhere, such as ``"dask"`` from ``atasker-dask``.
    :returns: what *f* returned.
    :raises Exception: what *f* raised (its traceback in the worker chained
        as a :class:`RemoteTraceback`), :class:`ProcessDiedError`,
        :class:`TaskPicklingError`, or :class:`SupervisorStoppedError`.
    """
    if supervisor is None:
        supervisor = default_supervisor()
    spec = TaskSpec(tt=tt, delay=delay) if priority is None else TaskSpec(tt=tt, delay=delay, priority=priority)
    task = supervisor.submit(f, tuple(args), dict(kwargs) if kwargs else {}, spec=spec)
    return await asyncio.wrap_future(task)
