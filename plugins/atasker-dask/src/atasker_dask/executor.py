"""The executor of task type ``"dask"``.

::

    submit ──validate()──▶ first use / after a loss: connect thread ──▶ Client
       │                   (LocalCluster or a remote scheduler)        │
       ▼  supervisor admits (pool: cluster threads + reserves)         │
    start(task) ──client.submit(key, priority=-task.priority)──▶ scheduler ──▶ worker
       ▲                                                                   │
       │     client's event loop: BatchGatherer ◀── future done ◀──────────┘
       │       (one client.gather per batch of finished futures)
       │                        │ add_batch
       │                        ▼
       └── task_done(result | exception) ◀── EventThread (also timeouts, cancels)

    scheduler "all" events (add-worker / remove-worker) ──▶ EventThread:
       scheduler_info() ──▶ applier thread ──▶ supervisor.set_pool("dask", ...)

:class:`DaskExecutor` composes one helper per concern:

* :class:`~atasker_dask.connection.Connection` -- the client, the cluster it
  may start, connection states and generations, tasks held while connecting;
* :class:`~atasker_dask.submission.Submitter` -- keys, ``client.submit`` and
  the table of tasks on the cluster;
* :class:`~atasker_dask.collector.OutcomeCollector` -- outcomes of finished
  futures, remote errors, timeouts;
* :class:`~atasker_dask.sizing.PoolSizer` -- pool sizes that follow the
  cluster's worker threads;
* :class:`~atasker_dask.events.EventThread` -- the one thread that reports.

Every task is reported exactly once: whoever pops it from the table of tasks
on the cluster (or from those held while connecting) reports it -- the
EventThread for an outcome or a timeout, ``cancel()``, a lost connection or
``shutdown()``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from . import registry
from .collector import OutcomeCollector, cancel_remote
from .config import wait_seconds
from .connection import Connection
from .events import EventThread
from .registry import executor_of
from .sizing import PoolSizer, auto_sizes
from .submission import SUBMIT_OPTIONS, Submitter, validate_task

if TYPE_CHECKING:
    from atasker import Pool, SupervisorAPI, Task

    from .config import DaskSettings

__all__ = ["SUBMIT_OPTIONS", "DaskExecutor", "auto_sizes", "executor_of"]


class DaskExecutor:
    """Runs atasker tasks as Dask futures (one ``Client`` per supervisor).

    Created by the supervisor on the first use of task type ``"dask"``; the
    connection is opened in the background (the first ``submit`` returns at
    once).  See the module docstring for the threads involved.
    """

    def __init__(self, supervisor: SupervisorAPI, pool: Pool) -> None:
        self._supervisor = supervisor
        self._connection = Connection(
            supervisor,
            report=self._report,
            claim_lost=self._claim_lost,
            on_connected=self._on_connected,
            on_cluster_event=self._on_cluster_event,
        )
        self._events = EventThread(f"atasker_dask_{supervisor.name}", self._collect, supervisor)
        self._submitter = Submitter(self._connection, self._report, self._report_soon)
        self._sizer = PoolSizer(supervisor, pool, self._connection, self._events)
        self._collector = OutcomeCollector(self._submitter, self._connection, self._events, self._report, self._busy)
        registry.state_of(supervisor).attach(self)

    # ------------------------------------------------------------ protocol

    def validate(self, task: Task) -> None:
        """Check options and timeout; begin connecting if not connected."""
        validate_task(task)
        self._connection.assign_generation(task)

    def start(self, task: Task) -> None:
        """Submit *task* to the cluster (or hold it while connecting); never blocks."""
        client, error = self._connection.client_for(task)
        if error is not None:
            # Not inline: reporting admits the next queued task, whose start()
            # would fail and report in turn, one stack level per queued task.
            self._report_soon(task, exception=error)
            return
        if task.timeout is not None:
            self._collector.schedule_timeout(task)
        if client is not None:
            self._submit(client, task)

    def cancel(self, task: Task) -> bool:
        """Cancel a started task: its handle is cancelled now, its future on the cluster.

        A function already running on a worker runs on to its end (Dask cannot
        interrupt it) and its result is dropped; the atasker slot is free at once.
        """
        if self._connection.release(task):
            self._report(task, cancelled=True)
            return True
        entry = self._submitter.inflight.pop(self._submitter.key(task), None)
        if entry is None:
            return False  # already finished, or being reported
        self._report(task, cancelled=True)
        self._events.post(cancel_remote, entry[1], "cancelled")
        return True

    def capacity(self) -> int | None:
        """``None``: Dask queues what the workers cannot run yet (in priority order)."""
        return None

    def resize(self, pool: Pool) -> None:
        """The user changed the pool: sizes set to other values stop following the cluster."""
        self._sizer.resize(pool)

    def shutdown(self, wait: bool = True) -> None:
        """Cancel what is left, close the client, and the local cluster if atasker started it."""
        pending = self._connection.mark_closed()
        if pending is None:
            return  # shut down already
        registry.state_of(self._supervisor).detach(self)
        for task in pending + self._submitter.sweep():
            self._report(task, cancelled=True)
        self._events.stop(wait=wait)
        self._connection.close(wait=wait)

    # ------------------------------------------------------------ public extras

    @property
    def supervisor(self) -> SupervisorAPI:
        """The supervisor this executor runs dask tasks for."""
        return self._supervisor

    @property
    def settings(self) -> DaskSettings:
        """The settings of the current (or last) connection attempt."""
        return self._connection.settings

    def in_use(self) -> bool:
        """Whether a connection is open or being opened."""
        return self._connection.in_use()

    def client(self, timeout: float | None = None) -> Any:
        """The :class:`distributed.Client`, connecting first if needed (blocks).

        :raises SchedulerUnavailableError: no connection within *timeout*, or
            the attempt failed.
        :raises ValueError: a bad *timeout* (see :func:`~atasker_dask.config.wait_seconds`),
            before connecting.
        """
        return self._connection.wait_client(wait_seconds(timeout, "timeout"))

    def wait_threads(self, threads: int, timeout: float | None = None) -> bool:
        """Wait until the cluster has *threads* worker threads and the pool follows.

        :returns: ``False`` on timeout.
        :raises ValueError: a bad *timeout* (see :func:`~atasker_dask.config.wait_seconds`).
        """
        return self._sizer.wait_threads(threads, wait_seconds(timeout, "timeout"))

    def statistics(self) -> dict[str, Any]:
        """Connection state, cluster threads, tasks on the cluster and waiting for it."""
        connection = self._connection
        with connection.lock:
            return {
                "state": connection.state,
                "address": connection.address,
                "generation": connection.generation,
                "cluster_threads": self._sizer.threads,
                "on_cluster": len(self._submitter.inflight),
                "waiting_for_connection": len(connection.pending),
                "following": sorted(self._sizer.following),
            }

    # ------------------------------------------------------------ for tests

    @property
    def _token(self) -> str:
        return self._submitter.token

    @property
    def _cluster(self) -> Any:
        return self._connection.cluster

    def _key(self, task: Task) -> str:
        return self._submitter.key(task)

    # ------------------------------------------------------------ wiring
    # The helpers call back through these methods, bound late: the connection
    # is built before the helpers it calls (they need it in turn).

    def _submit(self, client: Any, task: Task) -> None:
        future = self._submitter.submit(client, task)
        if future is not None:
            self._collector.watch(future)

    def _on_connected(self, client: Any, threads: int, pending: list[Task]) -> None:
        """The connect thread connected: follow the cluster, submit what waited."""
        self._sizer.set_threads(threads)
        for task in pending:
            self._submit(client, task)

    def _on_cluster_event(self, event: Any) -> None:
        self._sizer.on_cluster_event(event)

    def _claim_lost(self, client: Any) -> list[tuple[Task, Any]]:
        return self._submitter.claim_lost(client)

    def _collect(self, items: list[Any]) -> None:
        self._collector.collect(items)

    def _busy(self) -> bool:
        """Many more tasks on the cluster than threads: throughput, not latency, counts.

        With the default pool, a queue of NORMAL or more urgent tasks makes
        it busy; LOW tasks alone (one per thread) do not.
        """
        return len(self._submitter.inflight) > 4 * max(1, self._sizer.threads or 0)

    def _report(self, task: Task, **outcome: Any) -> None:
        self._supervisor.task_done(task, **outcome)

    def _report_soon(self, task: Task, **outcome: Any) -> None:
        """Report from the EventThread (inline once it has stopped)."""
        if not self._events.post(functools.partial(self._report, task, **outcome)):
            self._report(task, **outcome)
