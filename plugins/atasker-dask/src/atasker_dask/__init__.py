"""atasker task type ``"dask"``: background tasks on a Dask distributed cluster.

After installing ``plugins/atasker-dask`` the same task runs on a cluster by naming
the task type::

    from atasker import TASK_HIGH, background_task
    from atasker_dask import TT_DASK

    @background_task(tt=TT_DASK, priority=TASK_HIGH)
    def simulate(seed):
        ...

    result = simulate(42).result()

Where tasks run: :func:`configure` names a scheduler address or a cluster
object the application started (or ``ATASKER_DASK_ADDRESS`` an address);
with neither, a :func:`local_cluster` is started on first use and closed on
``stop()``.

* The handle gets the result, or the task's exception (its type kept, the
  worker's traceback chained as a :class:`atasker.RemoteTraceback`);
  ``callback`` runs here, in atasker-dask's reporting thread.
* atasker priorities apply twice: the supervisor admits tasks by priority and
  reserves (pool size = the cluster's worker threads, followed as workers come
  and go), and Dask gets ``priority=-task.priority`` so that the scheduler
  runs more urgent work first.
* ``cancel()`` of a running task cancels its future on the cluster and the
  handle at once; a function already running on a worker runs on to its end.
* A worker that dies is Dask's to handle (it re-runs the task elsewhere);
  when Dask gives up the task fails with :class:`DaskWorkerDiedError`.  A
  lost scheduler fails the tasks running and queued with
  :class:`SchedulerLostError`; the next dask task connects again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from atasker import TaskType, hookimpl

from .config import DEFAULT_CLUSTER_CONFIG, ENV_ADDRESS, DaskSettings, configure, local_cluster, wait_seconds
from .errors import DaskTaskTimeoutError, DaskWorkerDiedError, SchedulerLostError, SchedulerUnavailableError
from .executor import SUBMIT_OPTIONS, DaskExecutor
from .registry import atasker_configure

if TYPE_CHECKING:
    from atasker import TaskSupervisor

__all__ = [
    "DEFAULT_CLUSTER_CONFIG",
    "ENV_ADDRESS",
    "SUBMIT_OPTIONS",
    "TT_DASK",
    "DaskExecutor",
    "DaskSettings",
    "DaskTaskTimeoutError",
    "DaskWorkerDiedError",
    "SchedulerLostError",
    "SchedulerUnavailableError",
    "atasker_configure",
    "co_dask_apply",
    "configure",
    "get_client",
    "local_cluster",
]

__version__ = "1.0.0"

#: The task type name: ``background_task(f, tt=TT_DASK)``.
TT_DASK = "dask"


def _supervisor(supervisor: TaskSupervisor | None) -> TaskSupervisor:
    if supervisor is None:
        from atasker import task_supervisor

        return task_supervisor
    return supervisor


def get_client(supervisor: TaskSupervisor | None = None, timeout: float | None = None) -> Any:
    """The :class:`distributed.Client` the supervisor's dask tasks use.

    Connects (or starts the local cluster) first if needed, and blocks until
    then: call it at startup to fail early, or to scatter data and inspect the
    cluster.  Do not close the client: ``stop()`` does.

    :param supervisor: default ``atasker.task_supervisor``.
    :param timeout: seconds to wait for the connection (default: as long as
        the attempt takes, bounded by ``connect_timeout`` for a scheduler).
    :raises SchedulerUnavailableError: the connection failed or timed out.
    :raises ValueError: *timeout* is not ``None`` or a finite number ``>= 0``
        (checked before connecting).
    """
    timeout = wait_seconds(timeout, "timeout")
    executor = _supervisor(supervisor).executor(TT_DASK)
    if not isinstance(executor, DaskExecutor):
        raise TypeError(f"task type {TT_DASK!r} is provided by {type(executor).__name__}, not atasker-dask")
    return executor.client(timeout)


async def co_dask_apply(
    f: Callable[..., Any],
    args: tuple[Any, ...] | list[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    priority: int | None = None,
    delay: float | None = None,
    timeout: float | None = None,
    options: Mapping[str, Any] | None = None,
    supervisor: TaskSupervisor | None = None,
) -> Any:
    """Run ``f(*args, **kwargs)`` as a dask task and await its result.

    ``co_mp_apply`` for the cluster: the event loop is never blocked (the
    connection, if not open yet, is made in the background).  Cancelling the
    awaiting coroutine cancels the task (see :meth:`DaskExecutor.cancel`).

    :param f: the function: importable, or a lambda, closure or ``__main__``
        function (Dask pickles those by value with cloudpickle).
    :param args: positional arguments.
    :param kwargs: keyword arguments.
    :param priority: atasker priority (default ``TASK_NORMAL``).
    :param delay: seconds to wait before the task joins its queue.
    :param timeout: seconds the task may take once started.
    :param options: ``Client.submit`` options: ``workers``, ``resources``,
        ``retries``, ``allow_other_workers``.
    :param supervisor: default ``atasker.task_supervisor``.
    :returns: what *f* returned.
    """
    submit_kwargs: dict[str, Any] = {"tt": TT_DASK, "delay": delay, "timeout": timeout}
    if priority is not None:
        submit_kwargs["priority"] = priority
    if options:
        submit_kwargs["options"] = dict(options)
    task = _supervisor(supervisor).submit(f, tuple(args), dict(kwargs) if kwargs else {}, **submit_kwargs)
    return await asyncio.wrap_future(task)


@hookimpl
def atasker_register_task_types(register: Callable[[TaskType], None]) -> None:
    """Register task type ``"dask"``.

    The pool sizes are placeholders until the connection is up: then they
    follow the cluster (see :func:`atasker_dask.sizing.auto_sizes`).
    """
    register(
        TaskType(
            TT_DASK,
            DaskExecutor,
            pool_size=1,
            reserve_normal=1,
            reserve_high=1,
            doc="run the function on a Dask distributed cluster (a local one unless configured)",
        )
    )
