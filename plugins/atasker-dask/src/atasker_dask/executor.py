"""The executor of task type ``"dask"``.

::

    submit ──validate()──▶ first use / after a loss: connect thread ──▶ Client
       │                   (LocalCluster or a remote scheduler)        │
       ▼  supervisor admits (pool: cluster threads + reserves)         │
    start(task) ──client.submit(key, priority=-task.priority)──▶ scheduler ──▶ worker
       ▲                                                                   │
       │     client's event loop: _Collector ◀── future done ◀─────────────┘
       │       (one client.gather per batch of finished futures)
       │                        │ add_batch
       │                        ▼
       └── task_done(result | exception) ◀── EventThread (also timeouts, cancels)

    scheduler "all" events (add-worker / remove-worker) ──▶ EventThread:
       scheduler_info() ──▶ applier thread ──▶ supervisor.set_pool("dask", ...)

Every task is reported exactly once: whoever pops it from ``_inflight`` (or
``_pending`` while connecting) reports it -- the EventThread for an outcome
or a timeout, ``cancel()``, a lost connection or ``shutdown()``.

Connection states: ``idle`` -> ``connecting`` -> ``connected`` -> ``lost``
(the client's scheduler comm closed) -> ``connecting`` (the next dask task)
...; ``failed`` after an attempt that did not connect (tasks fail at once
for ``retry_interval`` seconds); ``closed`` after ``shutdown``.  Each
attempt is a *generation*: a task remembers the generation it was submitted
under, and a task still queued when its generation is lost or failed fails
with that error at once instead of waiting for a new connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import pickle
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any

from atasker import Pool, SupervisorStoppedError, Task

from ._events import EventThread
from .config import DaskSettings, local_cluster, settings_for
from .errors import DaskTaskTimeoutError, DaskWorkerDiedError, SchedulerLostError, SchedulerUnavailableError

try:  # the process-task errors, shared so that mp and dask tasks fail alike
    from atasker import RemoteTraceback, TaskPicklingError
except ImportError:  # pragma: no cover - an atasker without process tasks

    class RemoteTraceback(Exception):  # type: ignore[no-redef]
        """The formatted traceback of an exception raised on a worker."""

        def __init__(self, tb: str) -> None:
            super().__init__(tb)
            self.tb = tb

        def __str__(self) -> str:
            return f'\n"""\n{self.tb.rstrip()}\n"""'

    class TaskPicklingError(pickle.PicklingError, TypeError):  # type: ignore[no-redef]
        """A task's function, arguments or result could not be serialized."""


if TYPE_CHECKING:
    from atasker import TaskSupervisor

__all__ = ["SUBMIT_OPTIONS", "DaskExecutor", "auto_sizes", "executor_of"]

logger = logging.getLogger("atasker.dask")

#: Task options (``submit(..., options={...})``) passed on to ``Client.submit``.
SUBMIT_OPTIONS = frozenset({"workers", "resources", "retries", "allow_other_workers"})
# Client.submit's own keywords: a task keyword argument with one of these
# names would be taken by submit, so such a call goes through partial().
_SUBMIT_KEYWORDS = frozenset(
    {"func", "self", "key", "workers", "resources", "retries", "priority", "fifo_timeout", "allow_other_workers"}
) | {"actor", "actors", "pure"}
_SIZE_KEYS = ("pool_size", "reserve_normal", "reserve_high")

IDLE, CONNECTING, CONNECTED, LOST, FAILED, CLOSED = "idle", "connecting", "connected", "lost", "failed", "closed"

# Weak both ways: the supervisor holds its executor, never the other way round.
_executors: weakref.WeakKeyDictionary[TaskSupervisor, weakref.ref[DaskExecutor]] = weakref.WeakKeyDictionary()
# Sizes this plugin set with set_pool, per supervisor: they stay in the
# supervisor's pool configuration across stop()/start(), and must not then
# be mistaken for sizes the user set.
_written: weakref.WeakKeyDictionary[TaskSupervisor, dict[str, int]] = weakref.WeakKeyDictionary()


_live: weakref.WeakSet[DaskExecutor] = weakref.WeakSet()
_exit_hook = threading.Lock()
_exit_hook_registered = False


def _register_exit_hook() -> None:
    """Stop supervisors with dask tasks before ``concurrent.futures`` shuts down at exit.

    atasker stops started supervisors at exit, waiting for their tasks, from
    a ``threading`` exit hook; those run in reverse order of registration,
    and ``concurrent.futures`` registers its own (after which its thread
    pools refuse work) when first imported -- for a supervisor that started
    before ``distributed`` was imported, after atasker's.  A local cluster's
    scheduler needs those pools, so a dask task still queued at exit would
    fail.  Registered once ``distributed`` is imported, this hook runs first.
    """
    global _exit_hook_registered
    with _exit_hook:
        if _exit_hook_registered:
            return
        try:
            threading._register_atexit(_stop_at_exit)  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError):  # not CPython, or already exiting
            return
        _exit_hook_registered = True


def _stop_at_exit() -> None:
    for executor in list(_live):
        supervisor = executor._supervisor
        if executor.in_use() and supervisor.is_active():
            try:
                supervisor.stop(wait=True)
            except Exception:
                logger.exception("atasker-dask: stopping %r at exit failed", supervisor)


def executor_of(supervisor: TaskSupervisor) -> DaskExecutor | None:
    """The live dask executor of *supervisor*, if it has created one."""
    ref = _executors.get(supervisor)
    return ref() if ref is not None else None


def auto_sizes(threads: int) -> dict[str, int]:
    """Pool sizes for a cluster of *threads* worker threads.

    * ``pool_size`` = threads (at least 1: ``0`` would mean unlimited): LOW
      tasks never wait on the cluster, so none is ever queued there ahead of
      more urgent work;
    * ``reserve_normal`` = 7 x threads: NORMAL tasks keep up to eight per
      thread handed to Dask, one running and the rest waiting on the
      scheduler in Dask priority order, so that a thread that finishes finds
      its next task there instead of idling for the round trip to atasker
      and back (10-25 ms on a busy machine);
    * ``reserve_high`` = 8 x threads: HIGH tasks up to sixteen per thread,
      ahead of the NORMAL ones on the cluster.

    Measured with 1,000 trivial NORMAL tasks on 2 threads, against direct
    ``client.submit``: one task per thread on the cluster ran at 0.39-0.46x,
    two at 0.49x, four at 0.64-0.71x, eight at 0.90-0.92x, sixteen no faster
    (0.90x); 10 ms tasks at 0.90-0.93x with four or eight.
    """
    return {"pool_size": max(1, threads), "reserve_normal": 7 * threads, "reserve_high": 8 * threads}


def _cluster_threads(client: Any) -> int:
    """Worker threads on the cluster (a round trip to the scheduler)."""
    try:
        info = client.scheduler_info(n_workers=-1)  # all workers, not the first few
    except TypeError:  # distributed before n_workers=: it lists them all
        info = client.scheduler_info()
    workers = info.get("workers", {}) if info else {}
    return sum(int(w.get("nthreads", 0) or 0) for w in workers.values())


class DaskExecutor:
    """Runs atasker tasks as Dask futures (one ``Client`` per supervisor).

    Created by the supervisor on the first use of task type ``"dask"``; the
    connection is opened in the background (the first ``submit`` returns at
    once).  See the module docstring for the threads involved.
    """

    def __init__(self, supervisor: TaskSupervisor, pool: Pool) -> None:
        self._supervisor = supervisor
        self._tt = pool.tt
        self.settings: DaskSettings = settings_for(supervisor)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._state = IDLE
        self._gen = 0
        # gen -> (error class, message, cause) for tasks of a lost or failed generation.
        self._gen_errors: dict[int, tuple[type[BaseException], str, BaseException | None]] = {}
        self._client: Any = None
        self._cluster: Any = None  # a LocalCluster this executor started
        self._address: str | None = None
        self._failed_at = 0.0
        self._connect_thread: threading.Thread | None = None
        self._pending: dict[int, Task] = {}  # admitted while connecting
        self._inflight: dict[str, tuple[Task, Any]] = {}  # key -> (task, dask future)
        self._token = uuid.uuid4().hex  # keys are global on a scheduler: make ours unique
        self._events = EventThread(f"atasker_dask_{supervisor.name}", self._collect, supervisor)
        self._collector: _Collector | None = None
        self._refresh_posted = False
        # Pool sizes follow the cluster unless the user set them: the sizes in
        # the supervisor's pool configuration that this plugin did not write.
        configured = supervisor.pool_config(pool.tt)
        written = _written.get(supervisor, {})
        self._follow = {k for k in _SIZE_KEYS if k not in configured or written.get(k) == configured[k]}
        self._auto = {k: getattr(pool, k) for k in _SIZE_KEYS}
        self._threads: int | None = None
        self._applied_threads: int | None = None
        self._apply_lock = threading.RLock()
        self._applying = threading.local()
        _executors[supervisor] = weakref.ref(self)
        _live.add(self)

    # ------------------------------------------------------------ protocol

    def validate(self, task: Task) -> None:
        """Check options and timeout; begin connecting if not connected."""
        options = task.options
        if options:
            unknown = set(options) - SUBMIT_OPTIONS
            if unknown:
                raise TypeError(
                    f"unknown dask task option{'s' if len(unknown) > 1 else ''} "
                    f"{', '.join(sorted(map(repr, unknown)))}; known: {', '.join(sorted(SUBMIT_OPTIONS))}"
                )
        timeout = task.timeout
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        with self._lock:
            lost = self._check_alive_locked()
            state = self._state
            if state == CLOSED:
                raise SupervisorStoppedError("the dask executor is shut down")
            if state in (IDLE, LOST) or (
                state == FAILED and time.monotonic() - self._failed_at >= self.settings.retry_interval
            ):
                self._begin_connect_locked()
            task.executor_data = self._gen
        self._fail_entries(lost)

    def start(self, task: Task) -> None:
        """Submit *task* to the cluster (or hold it while connecting); never blocks."""
        gen = task.executor_data
        error: BaseException | None = None
        client = None
        with self._lock:
            lost = self._check_alive_locked()
            if gen != self._gen or self._state in (FAILED, LOST, CLOSED):
                error = self._error_for(gen)
            elif self._state == CONNECTING:
                self._pending[task.id] = task
            else:
                client = self._client
        self._fail_entries(lost)
        if error is not None:
            # Not inline: reporting admits the next queued task, whose start()
            # would fail and report in turn, one stack level per queued task.
            self._report_soon(task, exception=error)
            return
        if task.timeout is not None:
            # Weakly: a finished task must not stay alive until its timeout would have run out.
            self._events.call_at(time.monotonic() + task.timeout, self._expire, weakref.ref(task))
        if client is not None:
            self._submit(client, task)

    def cancel(self, task: Task) -> bool:
        """Cancel a started task: its handle is cancelled now, its future on the cluster.

        A function already running on a worker runs on to its end (Dask cannot
        interrupt it) and its result is dropped; the atasker slot is free at once.
        """
        with self._lock:
            held = self._pending.pop(task.id, None) is not None
        if held:
            self._report(task, cancelled=True)
            return True
        entry = self._inflight.pop(self._key(task), None)
        if entry is None:
            return False  # already finished, or being reported
        self._report(task, cancelled=True)
        self._events.post(self._cancel_remote, entry[1], "cancelled")
        return True

    def capacity(self) -> int | None:
        """``None``: Dask queues what the workers cannot run yet (in priority order)."""
        return None

    def resize(self, pool: Pool) -> None:
        """The user changed the pool: sizes set to other values stop following the cluster."""
        if getattr(self._applying, "active", False):
            return
        with self._apply_lock:
            for key in list(self._follow):
                if getattr(pool, key) != self._auto.get(key):
                    self._follow.discard(key)

    def shutdown(self, wait: bool = True) -> None:
        """Cancel what is left, close the client, and the local cluster if atasker started it."""
        with self._lock:
            if self._state == CLOSED:
                return
            self._state = CLOSED
            pending = list(self._pending.values())
            self._pending.clear()
            client, cluster = self._client, self._cluster
            self._client = self._cluster = None
            connect_thread = self._connect_thread
            self._changed.notify_all()
        if executor_of(self._supervisor) is self:
            del _executors[self._supervisor]
        leftover = [self._inflight.pop(key, None) for key in list(self._inflight)]
        for task in pending + [entry[0] for entry in leftover if entry is not None]:
            self._report(task, cancelled=True)
        self._events.stop(wait=wait)

        def close() -> None:
            if connect_thread is not None and connect_thread is not threading.current_thread():
                connect_thread.join()  # it closes what it opened once it sees "closed"
            _close_quietly(client, cluster)

        if wait:
            close()
        else:
            threading.Thread(target=close, name="atasker_dask_close", daemon=True).start()

    # ------------------------------------------------------------ public extras

    def in_use(self) -> bool:
        """Whether a connection is open or being opened."""
        return self._state in (CONNECTING, CONNECTED)

    def client(self, timeout: float | None = None) -> Any:
        """The :class:`distributed.Client`, connecting first if needed (blocks).

        :raises SchedulerUnavailableError: no connection within *timeout*, or
            the attempt failed.
        """
        with self._lock:
            lost = self._check_alive_locked()
            if self._state == CLOSED:
                raise SupervisorStoppedError("the dask executor is shut down")
            if self._state in (IDLE, LOST, FAILED):
                self._begin_connect_locked()
            gen = self._gen
        self._fail_entries(lost)
        with self._lock:
            done = self._changed.wait_for(lambda: self._gen != gen or self._state != CONNECTING, timeout)
            if self._state == CONNECTED and self._gen == gen:
                return self._client
            if not done:
                raise SchedulerUnavailableError(f"no connection to {self.settings.describe()} after {timeout} s")
            raise self._error_for(gen)

    def wait_threads(self, threads: int, timeout: float | None = None) -> bool:
        """Wait until the cluster has *threads* worker threads and the pool follows.

        :returns: ``False`` on timeout.
        """
        with self._changed:
            return self._changed.wait_for(lambda: self._applied_threads == threads, timeout)

    def statistics(self) -> dict[str, Any]:
        """Connection state, cluster threads, tasks on the cluster and waiting for it."""
        with self._lock:
            return {
                "state": self._state,
                "address": self._address,
                "generation": self._gen,
                "cluster_threads": self._threads,
                "on_cluster": len(self._inflight),
                "waiting_for_connection": len(self._pending),
                "following": sorted(self._follow),
            }

    # ------------------------------------------------------------ connection

    def _begin_connect_locked(self) -> None:
        self.settings = settings_for(self._supervisor)
        self._gen += 1
        self._state = CONNECTING
        thread = threading.Thread(
            target=self._connect, args=(self._gen, self.settings), name="atasker_dask_connect", daemon=True
        )
        self._connect_thread = thread
        thread.start()

    def _connect(self, gen: int, settings: DaskSettings) -> None:
        """Open a client (starting a local cluster if configured so); then submit what waits."""
        client = cluster = replaced = None
        threads = 0
        error: BaseException | None = None
        try:
            client, cluster = self._open(settings)
            _register_exit_hook()
            client.subscribe_topic("all", self._on_cluster_event)
            _set_submit_interval(client, settings.submit_interval)
            threads = _cluster_threads(client)
            if settings.remote:
                self._check_saturation(client)
        except Exception as exc:
            error = exc
        with self._lock:
            current = gen == self._gen and self._state == CONNECTING
            if current and error is None:
                self._client = client
                # A local cluster of an earlier connection, replaced by a
                # configure() since: closed below, not left running.
                replaced = self._cluster if self._cluster is not cluster else None
                self._cluster = cluster
                self._state = CONNECTED
                self._address = getattr(getattr(client, "scheduler", None), "address", None) or settings.address
            elif current:
                self._state = FAILED
                self._failed_at = time.monotonic()
                self._gen_errors[gen] = (
                    SchedulerUnavailableError,
                    f"could not connect to {settings.describe()}: {type(error).__name__}: {error}",
                    error,
                )
            pending = list(self._pending.values()) if current else []
            if current:
                self._pending.clear()
            self._changed.notify_all()
        if not current or error is not None:
            # Shut down or superseded meanwhile, or failed half way: close what
            # was opened (a cluster this executor keeps is closed by shutdown).
            _close_quietly(client, cluster if cluster is not self._cluster else None)
        if not current:
            return
        if error is not None:
            logger.error("atasker-dask: could not connect to %s: %s", settings.describe(), error)
            for task in pending:
                self._report(task, exception=self._error_for(gen))
            return
        if replaced is not None:
            closer = threading.Thread(target=_close_quietly, args=(None, replaced), daemon=True)
            closer.name = "atasker_dask_close"
            closer.start()
        logger.info("atasker-dask: connected to %s (%d worker threads)", self._address, threads)
        self._set_threads(threads)
        for task in pending:
            self._submit(client, task)

    def _open(self, settings: DaskSettings) -> tuple[Any, Any]:
        from distributed import LocalCluster
        from distributed.core import Status

        kwargs: dict[str, Any] = {"set_as_default": False, "timeout": settings.connect_timeout}
        kwargs.update(settings.client_kwargs)
        if settings.cluster is not None:
            if settings.security is not None:
                kwargs.setdefault("security", settings.security)
            if isinstance(settings.cluster, LocalCluster):
                kwargs.setdefault("direct_to_workers", True)  # same machine, as below
            return _new_client(settings.cluster, kwargs), None
        if settings.remote:
            if settings.security is not None:
                kwargs.setdefault("security", settings.security)
            if settings.scheduler_file:
                kwargs["scheduler_file"] = settings.scheduler_file
            return _new_client(settings.address, kwargs), None
        cluster = self._cluster
        started = cluster is None or cluster.status in (Status.closing, Status.closed, Status.failed)
        if started:
            cluster_kwargs = dict(settings.cluster_kwargs)
            if settings.security is not None:
                cluster_kwargs.setdefault("security", settings.security)
            cluster = local_cluster(config=settings.cluster_config, **cluster_kwargs)
        # Same machine: fetch results straight from the workers, not via the scheduler.
        kwargs.setdefault("direct_to_workers", True)
        try:
            return _new_client(cluster, kwargs), cluster
        except BaseException:
            if started:
                _close_quietly(None, cluster)
            raise

    def _check_saturation(self, client: Any) -> None:
        try:
            # A lambda: Dask sends it by value, the scheduler need not have atasker-dask.
            saturation = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.WORKER_SATURATION)
        except Exception as exc:  # e.g. the scheduler refuses pickled functions
            logger.debug("atasker-dask: could not read the scheduler's worker-saturation: %s", exc)
            return
        if saturation is not None and saturation != 1.0:
            logger.warning(
                "atasker-dask: the Dask scheduler at %s has distributed.scheduler.worker-saturation = %s; "
                "it hands out large groups of similar tasks in priority order only with 1.0 (start it "
                "with DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION=1.0)",
                self._address or client.scheduler.address,
                saturation,
            )

    def _check_alive_locked(self) -> list[tuple[Task, Any]]:
        """Notice a closed scheduler connection; call with the lock held."""
        if self._state == CONNECTED and self._client.status != "running":
            return self._lost_locked(None)
        return []

    def _lost_locked(self, cause: BaseException | None) -> list[tuple[Task, Any]]:
        """Mark the connection lost; return its tasks on the cluster, to fail."""
        if self._state != CONNECTED:
            return []
        client = self._client
        gen = self._gen
        self._gen_errors[gen] = (
            SchedulerLostError,
            f"lost the connection to {self.settings.describe()} ({self._address}); dask tasks running "
            "or queued then fail, the next dask task connects again",
            cause,
        )
        for old in [g for g in self._gen_errors if g < gen - 16]:
            del self._gen_errors[old]
        self._state = LOST
        self._client = None
        self._changed.notify_all()
        logger.error("atasker-dask: lost the connection to the Dask scheduler at %s", self._address)
        # Its futures were cancelled by Dask, but their callbacks need the
        # client's loop, which closing it stops: claim them here.
        entries = []
        for key, (_, future) in list(self._inflight.items()):
            if future.client is client:
                entry = self._inflight.pop(key, None)
                if entry is not None:
                    entries.append(entry)
        threading.Thread(target=_close_quietly, args=(client, None), name="atasker_dask_close", daemon=True).start()
        return entries

    def _fail_entries(self, entries: list[tuple[Task, Any]]) -> None:
        for task, _ in entries:
            self._report(task, exception=self._error_for(task.executor_data))

    def _error_for(self, gen: int) -> BaseException:
        """A fresh exception for a task of generation *gen* that cannot run."""
        if self._state == CLOSED:
            return SupervisorStoppedError("the dask executor was shut down before the task started")
        cls, message, cause = self._gen_errors.get(
            gen, (SchedulerLostError, f"the connection to {self.settings.describe()} was lost", None)
        )
        error = cls(message)
        error.__cause__ = cause
        return error

    # ------------------------------------------------------------ pool size

    def _on_cluster_event(self, event: Any) -> None:
        """A scheduler event (on the client's event loop: hand over, never block)."""
        try:
            _, msg = event
        except (TypeError, ValueError):
            return
        if isinstance(msg, dict) and msg.get("action") in ("add-worker", "remove-worker"):
            with self._lock:
                if self._refresh_posted:
                    return
                self._refresh_posted = True
            self._events.post(self._refresh_threads)

    def _refresh_threads(self) -> None:
        with self._lock:
            self._refresh_posted = False
            client = self._client if self._state == CONNECTED else None
        if client is None:
            return
        try:
            threads = _cluster_threads(client)
        except Exception as exc:
            logger.debug("atasker-dask: scheduler_info failed: %s", exc)
            return
        self._set_threads(threads)

    def _set_threads(self, threads: int) -> None:
        with self._lock:
            self._threads = threads
        # Not on this thread: set_pool takes the supervisor's configuration
        # lock, which stop() holds while it waits for this executor's threads.
        threading.Thread(target=self._apply_sizes, name="atasker_dask_resize", daemon=True).start()

    def _apply_sizes(self) -> None:
        with self._apply_lock:
            threads = self._threads
            if threads is None or self._state == CLOSED:
                return
            sizes = {k: v for k, v in auto_sizes(threads).items() if k in self._follow and self._auto.get(k) != v}
            if sizes:
                self._auto.update(sizes)
                _written.setdefault(self._supervisor, {}).update(sizes)
                self._applying.active = True
                try:
                    self._supervisor.set_pool(self._tt, **sizes)
                except Exception:
                    logger.exception("atasker-dask: could not resize the dask pool to %s", sizes)
                finally:
                    self._applying.active = False
            with self._changed:
                self._applied_threads = threads
                self._changed.notify_all()

    # ------------------------------------------------------------ tasks

    def _key(self, task: Task) -> str:
        # Like Dask's own keys ("name-<hex>"): Dask groups the tasks of one
        # name (dashboard, duration estimates, its root-task queue) as it
        # would if the application called client.submit itself.
        return f"{task.name}-{self._token}-{task.id}"

    def _submit(self, client: Any, task: Task) -> None:
        if self._state == CLOSED:  # e.g. the connect thread's backlog, after stop(wait=False)
            self._report(task, cancelled=True)
            return
        key = self._key(task)
        func, args, kwargs = task.func, task.args, task.kwargs
        if kwargs and not _SUBMIT_KEYWORDS.isdisjoint(kwargs):
            func, args, kwargs = functools.partial(func, *args, **kwargs), (), {}
        try:
            # Dask runs higher priorities first; atasker's lower numbers are more urgent.
            future = client.submit(func, *args, key=key, priority=-task.priority, pure=False, **task.options, **kwargs)
        except Exception as exc:
            self._report_soon(task, exception=self._submit_error(task, exc))
            return
        self._inflight[key] = (task, future)
        if self._state == CLOSED:
            # shutdown() has swept _inflight (it marks CLOSED first): whoever
            # pops the entry reports it, once.
            self._drop_after_shutdown(key)
            return
        if client.status != "running":
            # Lost between the check in start() and now: Dask may not have
            # cancelled this future along with the others.
            with self._lock:
                lost = self._lost_locked(None) if self._client is client else []
            entry = self._inflight.pop(key, None)
            self._fail_entries([*lost, *([entry] if entry else [])])
            return
        self._watch(future)

    def _drop_after_shutdown(self, key: str) -> None:
        # Its future goes with the client, which shutdown() closes: closing a
        # client releases its keys, one message for all rather than one each.
        entry = self._inflight.pop(key, None)
        if entry is not None:
            self._report(entry[0], cancelled=True)

    def _busy(self) -> bool:
        """Many more tasks on the cluster than threads: throughput, not latency, counts.

        With the default pool, a queue of NORMAL or more urgent tasks makes
        it busy; LOW tasks alone (one per thread) do not.
        """
        return len(self._inflight) > 4 * max(1, self._threads or 0)

    def _watch(self, future: Any) -> None:
        """Have *future*'s outcome reach the EventThread once it is done."""
        client = future.client
        collector = self._collector
        if collector is None or collector.client is not client:
            collector = self._collector = _Collector(client, self._events.add_batch, self._busy)
        # Straight on the client's event loop: Future.add_done_callback would
        # go through Dask's callback thread, one more hand-off.
        client.loop.add_callback(_when_done, future, collector.done)

    @staticmethod
    def _submit_error(task: Task, exc: BaseException) -> BaseException:
        if isinstance(exc, pickle.PicklingError) or "serializ" in str(exc).lower():
            error = TaskPicklingError(
                f"dask task {task.id} ({task.name}): its function or arguments could not be "
                f"serialized for the cluster: {exc}"
            )
            error.__cause__ = exc
            return error
        return exc

    def _collect(self, items: list[Any]) -> None:
        """Report the tasks of done futures (on the EventThread).

        An item is ``(future, result)`` when the collector gathered the
        result, else the future itself (it erred, was cancelled, or its
        result could not be gathered in the batch).
        """
        for item in items:
            future = item[0] if isinstance(item, tuple) else item
            entry = self._inflight.get(future.key)
            try:
                self._collect_one(item)
            except Exception as exc:  # one bad report must not lose the rest of the batch
                logger.exception("atasker-dask: reporting %r failed", item)
                task = entry[0] if entry is not None else None
                if task is not None and task.outcome is None and future.key not in self._inflight:
                    # Taken but not reported (task_done sets the outcome first): report the error.
                    try:
                        self._report(task, exception=exc)
                    except Exception:
                        logger.exception("atasker-dask: reporting task %s failed", task.id)

    def _collect_one(self, item: Any) -> None:
        gathered = isinstance(item, tuple)
        future = item[0] if gathered else item
        entry = self._inflight.pop(future.key, None)
        if entry is None:
            return  # cancelled, timed out or failed meanwhile: reported already
        task = entry[0]
        if gathered:
            self._report(task, result=item[1])
            return
        status = future.status
        if status == "finished":
            self._gather_one(future.client, task, future)
        elif status == "error":
            self._report(task, exception=self._remote_error(task, future))
        elif status == "cancelled":
            self._cancelled_by_dask(task, future)
        else:  # "lost" data is recomputed by Dask: wait again
            self._inflight[future.key] = entry
            if self._state == CLOSED:
                self._drop_after_shutdown(future.key)
            else:
                self._watch(future)

    def _gather_one(self, client: Any, task: Task, future: Any) -> None:
        try:
            result = client.gather([future])[0]
        except Exception as exc:
            if client.status != "running":
                with self._lock:
                    lost = self._lost_locked(exc) if self._client is client else []
                self._fail_entries(lost)
                self._report(task, exception=self._error_for(task.executor_data))
            elif "serializ" in str(exc).lower():
                error = TaskPicklingError(
                    f"dask task {task.id} ({task.name}): its result could not be serialized on the worker "
                    f"or deserialized here: {exc}"
                )
                error.__cause__ = exc
                self._report(task, exception=error)
            else:
                self._report(task, exception=exc)
        else:
            self._report(task, result=result)

    def _remote_error(self, task: Task, future: Any) -> BaseException:
        """The task's exception, with the worker's traceback chained; KilledWorker mapped."""
        from distributed.core import clean_exception

        # The final state is local once the done callback ran: read it
        # directly rather than with two blocking round trips to the client loop.
        state = getattr(future, "_state", None)
        if state is not None:
            _, exc, tb = clean_exception(state.exception, state.traceback)
        else:  # pragma: no cover - a future without _state
            exc, tb = future.exception(), future.traceback()
        if exc is None:
            return RuntimeError(f"dask task {task.id} ({task.name}) failed without an exception")
        if type(exc).__name__ == "KilledWorker":
            args = exc.args
            last = args[1] if len(args) > 1 else None
            last_address = getattr(last, "address", None) or (str(last) if last is not None else None)
            allowed = args[2] if len(args) > 2 and isinstance(args[2], int) else None
            deaths = "too often" if allowed is None else "once" if allowed == 0 else f"{allowed + 1} times"
            error = DaskWorkerDiedError(
                f"dask task {task.id} ({task.name}) failed: the workers running it died {deaths}"
                f" (the last one {last_address}); Dask gave up on it"
                + (f" (distributed.scheduler.allowed-failures = {allowed})" if allowed is not None else ""),
                key=future.key,
                last_worker=last_address,
                allowed_failures=allowed,
            )
            error.__cause__ = exc
            return error
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        exc.__traceback__ = None
        exc.__cause__ = RemoteTraceback(text)
        return exc

    def _cancelled_by_dask(self, task: Task, future: Any) -> None:
        """A future we did not cancel: the connection was lost, or someone cancelled it."""
        exc = getattr(getattr(future, "_state", None), "exception", None)
        client = future.client
        if getattr(exc, "reason", None) == "scheduler-connection-lost" or client.status != "running":
            with self._lock:
                lost = self._lost_locked(exc) if self._client is client else []
            self._fail_entries(lost)
            self._report(task, exception=self._error_for(task.executor_data))
            return
        if not isinstance(exc, BaseException):
            exc = CancelledError(f"dask task {task.id} ({task.name}) was cancelled on the cluster")
        self._report(task, exception=exc)

    def _expire(self, ref: weakref.ref[Task]) -> None:
        """A task's timeout ran out (on the EventThread)."""
        task = ref()
        if task is None:
            return  # finished and forgotten
        with self._lock:
            held = self._pending.pop(task.id, None) is not None
        entry = None if held else self._inflight.pop(self._key(task), None)
        if not held and entry is None:
            if not task.done() and self._state != CLOSED:
                # Between the connection's hand-over and its submission: look again shortly.
                self._events.call_at(time.monotonic() + 0.01, self._expire, ref)
            return
        self._report(
            task,
            exception=DaskTaskTimeoutError(
                f"dask task {task.id} ({task.name}) did not finish within its timeout of {task.timeout} s; "
                "its Dask future was cancelled (a function already running on a worker runs on to its end)"
            ),
        )
        if entry is not None:
            self._cancel_remote(entry[1], "timeout")

    @staticmethod
    def _cancel_remote(future: Any, why: str) -> None:
        try:
            if future.client.status == "running":
                try:
                    future.cancel(reason=f"atasker: {why}")
                except TypeError:  # distributed before cancel(reason=)
                    future.cancel()
        except Exception as exc:
            logger.debug("atasker-dask: cancelling %s failed: %s", future.key, exc)

    def _report(self, task: Task, **outcome: Any) -> None:
        self._supervisor.task_done(task, **outcome)

    def _report_soon(self, task: Task, **outcome: Any) -> None:
        """Report from the EventThread (inline once it has stopped)."""
        if not self._events.post(functools.partial(self._report, task, **outcome)):
            self._report(task, **outcome)


class _Collector:
    """Gathers the results of one client's finished futures, in batches.

    Runs on the client's event loop only (no locks): futures that finish
    while a gather is in flight wait for the next one, so the batches grow
    with the load and each costs one round trip, not one per task.  Results
    and other outcomes go to the EventThread with ``deliver(items)``.
    """

    __slots__ = ("busy", "client", "deliver", "ready", "running")

    #: Seconds to let results pile up while ``busy()``: the client's own
    #: stream to the scheduler batches over 10 ms.  Measured with 2,000
    #: trivial tasks on 2 cores: 1.6 tasks per gather and 0.74x of direct
    #: Dask throughput without it, 4 tasks and 0.86x at 5 ms, 0.90x at 10 ms,
    #: no better at 20 ms.
    BATCH_DELAY = 0.01

    def __init__(self, client: Any, deliver: Callable[[list[Any]], None], busy: Callable[[], bool]) -> None:
        self.client = client
        self.deliver = deliver
        self.busy = busy
        self.ready: list[Any] = []
        self.running = False

    def done(self, future: Any) -> None:
        self.ready.append(future)
        if not self.running:
            self.running = True
            self.client.loop.add_callback(self._run)

    async def _run(self) -> None:
        try:
            while self.ready:
                if self.busy():
                    # Tasks wait on the cluster beyond its threads: reporting a
                    # few ms later costs no throughput, and one gather (one
                    # round trip to the workers) then serves many tasks.
                    await asyncio.sleep(self.BATCH_DELAY)
                batch, self.ready = self.ready, []
                finished = [f for f in batch if f.status == "finished"]
                items: list[Any] = [f for f in batch if f.status != "finished"]
                if finished:
                    try:
                        results = await self.client.gather(finished, asynchronous=True)
                    except Exception:  # the EventThread retries them one by one
                        items.extend(finished)
                    else:
                        items.extend(zip(finished, results, strict=True))
                self.deliver(items)
        finally:
            self.running = False


async def _when_done(future: Any, callback: Callable[[Any], None]) -> None:
    """Call ``callback(future)`` on the client's event loop once *future* is done.

    Like ``distributed.client.done_callback`` (behind ``Future.add_done_callback``),
    but it also waits while the future is ``"lost"`` (a worker holding its
    result died and Dask recomputes it) instead of calling back at once.
    """
    state = future._state
    while state.status in ("pending", "lost"):
        await state.wait()
    callback(future)


def _new_client(target: Any, kwargs: dict[str, Any]) -> Any:
    """``Client(target, **kwargs)``, without a thread left behind when it fails.

    A synchronous ``Client`` starts its event loop thread before it connects,
    and a constructor that raises leaves no object to close: stop that
    thread here (each failed attempt would leave one more).
    """
    from distributed import Client

    client = Client.__new__(Client)
    try:
        client.__init__(target, **kwargs)
    except BaseException:
        runner = getattr(client, "_loop_runner", None)
        if runner is not None:
            try:
                # Closed for Client.__del__, which would otherwise try to close
                # it through the loop stopped here.
                client.status = "closed"
                runner.stop()
            except Exception as exc:
                logger.debug("atasker-dask: stopping a failed client's event loop failed: %s", exc)
        raise
    return client


def _set_submit_interval(client: Any, interval: float | None) -> None:
    """Let *client* send its messages to the scheduler every *interval* seconds.

    A Dask client batches what it sends the scheduler over 10 ms (a constant
    in ``distributed``, not a configuration key): right for a script that
    submits a graph at once, but atasker submits a task whenever another one
    finishes, so most submissions would wait for the next batch.
    """
    comm = getattr(client, "scheduler_comm", None)
    if interval is None or comm is None or not isinstance(getattr(comm, "interval", None), (int, float)):
        return  # a distributed that batches differently: leave it as it is
    comm.interval = interval


def _close_quietly(client: Any, cluster: Any) -> None:
    """Close a client and a cluster, logging (not raising) what goes wrong."""
    if client is not None and client.status == "running":
        try:
            # Or the scheduler tries to tell this client that it left.
            client.unsubscribe_topic("all")
        except Exception as exc:
            logger.debug("atasker-dask: unsubscribing failed: %s", exc)
    for thing in (client, cluster):
        if thing is None:
            continue
        try:
            thing.close()
        except Exception as exc:
            logger.debug("atasker-dask: closing %r failed: %s", thing, exc)
