"""The connection of one dask executor: its client, and the cluster it may start.

States: ``idle`` -> ``connecting`` -> ``connected`` -> ``lost`` (the
client's scheduler comm closed) -> ``connecting`` (the next dask task) ...;
``failed`` after an attempt that did not connect (tasks fail at once for
``retry_interval`` seconds); ``closed`` after ``shutdown``.  Each attempt is
a *generation*: a task remembers the generation it was submitted under, and
a task still queued when its generation is lost or failed fails with that
error at once instead of waiting for a new connection.

A connection is opened on a thread of its own (``atasker_dask_connect``),
never on the caller's: the first ``submit`` of a dask task returns at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from atasker import SupervisorStoppedError, Task

from .clients import check_saturation, close_quietly, open_client, set_submit_interval
from .config import DaskSettings, settings_for
from .errors import SchedulerLostError, SchedulerUnavailableError
from .sizing import cluster_threads

if TYPE_CHECKING:
    from atasker import SupervisorAPI

__all__ = [
    "CLOSED",
    "CONNECTED",
    "CONNECTING",
    "FAILED",
    "IDLE",
    "LOST",
    "Connection",
    "Entry",
]

logger = logging.getLogger("atasker.dask")

IDLE, CONNECTING, CONNECTED, LOST, FAILED, CLOSED = "idle", "connecting", "connected", "lost", "failed", "closed"

#: A task on the cluster and its Dask future.
Entry = tuple[Task, Any]


class Connection:
    """The client of one executor and the state of its connection (see the module docstring).

    :attr:`lock` guards the state, the generation, the client and the tasks
    held while connecting (:attr:`pending`); the executor and its helpers
    take it too, and :attr:`changed` (a condition on it) is notified when the
    state changes.

    :param report: ``report(task, **outcome)``: reports a task's outcome.
    :param claim_lost: ``claim_lost(client)``: takes and returns the tasks on
        the cluster through *client*, lost with it (called with the lock held).
    :param on_connected: ``on_connected(client, threads, pending)``: called on
        the connect thread once connected, with the cluster's worker threads
        and the tasks held meanwhile, to submit.
    :param on_cluster_event: subscribed to the scheduler's ``"all"`` topic
        (called on the client's event loop).
    """

    def __init__(
        self,
        supervisor: SupervisorAPI,
        *,
        report: Callable[..., None],
        claim_lost: Callable[[Any], list[Entry]],
        on_connected: Callable[[Any, int, list[Task]], None],
        on_cluster_event: Callable[[Any], None],
    ) -> None:
        self._supervisor = supervisor
        self._report = report
        self._claim_lost = claim_lost
        self._on_connected = on_connected
        self._on_cluster_event = on_cluster_event
        self.settings: DaskSettings = settings_for(supervisor)
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.state = IDLE
        self.generation = 0
        # generation -> (error class, message, cause) for tasks of a lost or failed generation.
        self._gen_errors: dict[int, tuple[type[BaseException], str, BaseException | None]] = {}
        self.client: Any = None
        self.cluster: Any = None  # a LocalCluster this connection started
        self.address: str | None = None
        self._failed_at = 0.0
        self._connect_thread: threading.Thread | None = None
        self.pending: dict[int, Task] = {}  # admitted while connecting
        self._to_close: tuple[Any, Any, threading.Thread | None] | None = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`mark_closed` was called (the executor is shut down)."""
        return self.state == CLOSED

    def in_use(self) -> bool:
        """Whether a connection is open or being opened."""
        return self.state in (CONNECTING, CONNECTED)

    # ------------------------------------------------------------ tasks

    def assign_generation(self, task: Task) -> None:
        """Begin connecting unless connected or connecting; stamp *task* with the generation.

        A failed generation is retried only ``retry_interval`` seconds after it failed.

        :raises SupervisorStoppedError: the executor is shut down.
        """
        with self.lock:
            lost = self.check_alive_locked()
            self._ensure_connecting_locked(retry_failed_now=False)
            task.executor_data = self.generation
        self.fail_entries(lost)

    def client_for(self, task: Task) -> tuple[Any, BaseException | None]:
        """Where *task* goes: ``(client, None)`` to submit it now; ``(None, None)``
        while connecting (it is held in :attr:`pending`); ``(None, error)``
        when its generation cannot run it.
        """
        gen = task.executor_data
        error: BaseException | None = None
        client = None
        with self.lock:
            lost = self.check_alive_locked()
            if gen != self.generation or self.state in (FAILED, LOST, CLOSED):
                error = self.error_for(gen)
            elif self.state == CONNECTING:
                self.pending[task.id] = task
            else:
                client = self.client
        self.fail_entries(lost)
        return client, error

    def release(self, task: Task) -> bool:
        """Take *task* out of :attr:`pending`; whether it was there."""
        with self.lock:
            return self.pending.pop(task.id, None) is not None

    def wait_client(self, timeout: float | None = None) -> Any:
        """The client, connecting first if needed (blocks).

        :raises SchedulerUnavailableError: no connection within *timeout*, or
            the attempt failed.
        :raises SupervisorStoppedError: the executor is shut down.
        """
        with self.lock:
            lost = self.check_alive_locked()
            self._ensure_connecting_locked(retry_failed_now=True)
            gen = self.generation
        self.fail_entries(lost)
        with self.lock:
            done = self.changed.wait_for(lambda: self.generation != gen or self.state != CONNECTING, timeout)
            if self.state == CONNECTED and self.generation == gen:
                return self.client
            if not done:
                raise SchedulerUnavailableError(f"no connection to {self.settings.describe()} after {timeout} s")
            raise self.error_for(gen)

    def connected_client_locked(self) -> Any:
        """The client if connected, else ``None``; call with the lock held."""
        return self.client if self.state == CONNECTED else None

    # ------------------------------------------------------------ losing it

    def check_alive_locked(self) -> list[Entry]:
        """Notice a closed scheduler connection; call with the lock held."""
        if self.state == CONNECTED and self.client.status != "running":
            return self.lost_locked(None)
        return []

    def lost_if_current(self, client: Any, cause: BaseException | None) -> list[Entry]:
        """Mark the connection lost if *client* is still its client; its tasks on the cluster, to fail."""
        with self.lock:
            return self.lost_locked(cause) if self.client is client else []

    def lost_locked(self, cause: BaseException | None) -> list[Entry]:
        """Mark the connection lost; return its tasks on the cluster, to fail."""
        if self.state != CONNECTED:
            return []
        client = self.client
        gen = self.generation
        self._gen_errors[gen] = (
            SchedulerLostError,
            f"lost the connection to {self.settings.describe()} ({self.address}); dask tasks running "
            "or queued then fail, the next dask task connects again",
            cause,
        )
        for old in [g for g in self._gen_errors if g < gen - 16]:
            del self._gen_errors[old]
        self.state = LOST
        self.client = None
        self.changed.notify_all()
        logger.error("atasker-dask: lost the connection to the Dask scheduler at %s", self.address)
        # Its futures were cancelled by Dask, but their callbacks need the
        # client's loop, which closing it stops: claim them here.
        entries = self._claim_lost(client)
        threading.Thread(target=close_quietly, args=(client, None), name="atasker_dask_close", daemon=True).start()
        return entries

    def fail_entries(self, entries: list[Entry]) -> None:
        """Report each task of *entries* failed with the error of its generation."""
        for task, _ in entries:
            self._report(task, exception=self.error_for(task.executor_data))

    def error_for(self, gen: int) -> BaseException:
        """A fresh exception for a task of generation *gen* that cannot run."""
        if self.state == CLOSED:
            return SupervisorStoppedError("the dask executor was shut down before the task started")
        cls, message, cause = self._gen_errors.get(
            gen, (SchedulerLostError, f"the connection to {self.settings.describe()} was lost", None)
        )
        error = cls(message)
        error.__cause__ = cause
        return error

    # ------------------------------------------------------------ closing it

    def mark_closed(self) -> list[Task] | None:
        """Enter state ``closed``: return the tasks held while connecting (``None`` if closed already).

        The client and cluster are taken over for :meth:`close`.
        """
        with self.lock:
            if self.state == CLOSED:
                return None
            self.state = CLOSED
            pending = list(self.pending.values())
            self.pending.clear()
            self._to_close = (self.client, self.cluster, self._connect_thread)
            self.client = self.cluster = None
            self.changed.notify_all()
        return pending

    def close(self, wait: bool = True) -> None:
        """Close what :meth:`mark_closed` took over: now, or on a thread of its own."""
        if self._to_close is None:
            return
        client, cluster, connect_thread = self._to_close
        self._to_close = None

        def close() -> None:
            if connect_thread is not None and connect_thread is not threading.current_thread():
                connect_thread.join()  # it closes what it opened once it sees "closed"
            close_quietly(client, cluster)

        if wait:
            close()
        else:
            threading.Thread(target=close, name="atasker_dask_close", daemon=True).start()

    # ------------------------------------------------------------ opening it

    def _ensure_connecting_locked(self, *, retry_failed_now: bool) -> None:
        if self.state == CLOSED:
            raise SupervisorStoppedError("the dask executor is shut down")
        if self.state in (IDLE, LOST) or (
            self.state == FAILED
            and (retry_failed_now or time.monotonic() - self._failed_at >= self.settings.retry_interval)
        ):
            self._begin_connect_locked()

    def _begin_connect_locked(self) -> None:
        self.settings = settings_for(self._supervisor)
        self.generation += 1
        self.state = CONNECTING
        thread = threading.Thread(
            target=self._connect, args=(self.generation, self.settings), name="atasker_dask_connect", daemon=True
        )
        self._connect_thread = thread
        thread.start()

    def _connect(self, gen: int, settings: DaskSettings) -> None:
        """Open a client (starting a local cluster if configured so); then hand over what waits."""
        client = cluster = replaced = None
        threads = 0
        error: BaseException | None = None
        try:
            client, cluster = open_client(settings, self.cluster)
            client.subscribe_topic("all", self._on_cluster_event)
            set_submit_interval(client, settings.submit_interval)
            threads = cluster_threads(client)
            if settings.remote:
                check_saturation(client, self.address)
        except Exception as exc:
            error = exc
        with self.lock:
            current = gen == self.generation and self.state == CONNECTING
            if current and error is None:
                self.client = client
                # A local cluster of an earlier connection, replaced by a
                # configure() since: closed below, not left running.
                replaced = self.cluster if self.cluster is not cluster else None
                self.cluster = cluster
                self.state = CONNECTED
                self.address = getattr(getattr(client, "scheduler", None), "address", None) or settings.address
            elif current:
                self.state = FAILED
                self._failed_at = time.monotonic()
                self._gen_errors[gen] = (
                    SchedulerUnavailableError,
                    f"could not connect to {settings.describe()}: {type(error).__name__}: {error}",
                    error,
                )
            pending = list(self.pending.values()) if current else []
            if current:
                self.pending.clear()
            self.changed.notify_all()
        if not current or error is not None:
            # Shut down or superseded meanwhile, or failed half way: close what
            # was opened (a cluster this connection keeps is closed by close()).
            close_quietly(client, cluster if cluster is not self.cluster else None)
        if not current:
            return
        if error is not None:
            logger.error("atasker-dask: could not connect to %s: %s", settings.describe(), error)
            for task in pending:
                self._report(task, exception=self.error_for(gen))
            return
        if replaced is not None:
            closer = threading.Thread(target=close_quietly, args=(None, replaced), daemon=True)
            closer.name = "atasker_dask_close"
            closer.start()
        logger.info("atasker-dask: connected to %s (%d worker threads)", self.address, threads)
        self._on_connected(client, threads, pending)
