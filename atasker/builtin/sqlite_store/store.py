"""The ``sqlite`` status store: live records in memory, task history in SQLite.

Never active by being installed; select it per supervisor::

    TaskSupervisor(status_store="sqlite:////var/lib/myapp/tasks.db?keep=7d")
    task_supervisor.start(status_store="sqlite:///tasks.db")   # ./tasks.db
    ATASKER_STATUS_STORE=sqlite:////var/lib/myapp/tasks.db

URLs follow SQLAlchemy: ``sqlite:///relative/path.db``,
``sqlite:////absolute/path.db`` (see :mod:`.url`).

Data flow (the ``task_*`` calls never touch the disk)::

    submitting / finishing threads            writer thread (one per store)
    ──────────────────────────────            ───────────────────────────────────────
    task_queued    live[id] = task            sleeps on "dirty" (idle: never wakes)
    task_started   pending.append(task) ───▶  batching window: one commit per
    task_finished  live.pop(id)                 flush_interval at most
                   pending.append(task)       drain pending, one row per task
                   full? wait for room ◀───┐  (its fields as they are now)
                                           └─ notify after each drain
                                              BEGIN IMMEDIATE; REPLACE rows; COMMIT
                                              wake flush() callers; prune (keep=)

Rules (documented in ``docs/stores.rst``):

* **Flush bound**: a record is committed at most ``flush_interval``
  (default 0.1 s) plus one write after it was handed over, while the disk
  keeps up; ``stop()`` commits everything.  After ``kill -9`` the file
  holds every commit (WAL, ``synchronous=NORMAL``).
* **Back-pressure**: at most ``max_pending`` records wait for the writer.
  When full, ``task_finished`` blocks the finishing thread until the
  writer has taken the batch (so pools slow to the disk's pace);
  ``task_queued`` / ``task_started`` never block -- their tasks are live
  and in memory anyway -- nor does the final record of a *cancelled*
  task, so ``Task.cancel()`` and ``stop()`` never wait for the disk.
  Records are not dropped while the writer lives: transient errors
  (locked, busy, disk full, I/O) are retried with backoff and logged.
  Only a permanent error (a corrupt file, the file removed or replaced
  under the store) stops the writer; it is logged, reported as an
  internal error, the records lost are counted, and ``close()`` -- hence
  ``stop()`` -- raises :class:`~atasker.builtin.sqlite_store.db.StatusStoreError`.
* **Values**: a record SQLite cannot hold as it is never stops the writer:
  see :func:`~atasker.builtin.sqlite_store.rows.storable`; only the batch that holds it takes the slow path.
* **Stop deadline**: ``stop(wait=N)`` bounds how long ``close()`` retries a
  failing disk (``wait=False``: one attempt); ``stop(wait=True)`` and a
  direct ``close()`` retry for ``CLOSE_TIMEOUT``.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from atasker.builtin.sqlite_store.db import StatusStoreError, begin_run, is_transient, open_db, prune
from atasker.builtin.sqlite_store.filecheck import FileCheck
from atasker.builtin.sqlite_store.rows import (
    MAX_MESSAGE,
    PLAIN_COLUMNS,
    RECORD_ERRORS,
    REPLACE_SQL,
    build_rows,
    convert,
    describe_error,
    insert_each,
    log_rejected,
    storable,
)
from atasker.builtin.sqlite_store.url import parse_url, resolve_url
from atasker.core import lifecycle
from atasker.core.signals import signals_to_main_thread
from atasker.plugin.hookspecs import hookimpl
from atasker.plugin.protocols import CommandType, StatusStoreType

if TYPE_CHECKING:
    from atasker.core.task import Task

__all__ = ["MAX_MESSAGE", "SQLiteStore", "describe_error", "parse_url", "resolve_url", "storable"]

logger = logging.getLogger("atasker")

#: Defaults of the URL options.
FLUSH_INTERVAL = 0.1
MAX_PENDING = 100_000
TIMEOUT = 5.0
CLOSE_TIMEOUT = 30.0
# Events per write transaction at most.
_MAX_BATCH = 50_000
# Rows per multi-row INSERT: 100 * 8 = 800 parameters, under the 999 limit
# of SQLite builds older than 3.32.
_CHUNK = 100


class _GiveUp(Exception):
    """Closing, and the disk did not recover before the close deadline."""


class SQLiteStore:
    """Live records in a dict (``get``), history batched into SQLite.

    Usually created from a URL by the supervisor; see the module docstring
    for the data flow, the flush bound and the back-pressure rule.

    :param path: the database file, created with mode ``0600`` if missing.
    :param supervisor_name: recorded with the run.
    :param keep: seconds of history to keep (``None``: forever; the URL
        option takes a unit, ``keep=7d``); pruned when
        the store opens and then every ``keep / 24`` (1 min .. 1 h).
    :param flush_interval: seconds between commits at most (the loss bound
        after a crash).
    :param max_pending: records that may wait for the writer before
        ``task_finished`` blocks.
    :param timeout: seconds to wait for another connection's lock.
    :raises StatusStoreError: the file cannot be used (naming it and why).
    """

    def __init__(
        self,
        path: str,
        *,
        supervisor_name: str = "supervisor",
        keep: float | None = None,
        flush_interval: float = FLUSH_INTERVAL,
        max_pending: int = MAX_PENDING,
        timeout: float = TIMEOUT,
    ) -> None:
        if type(max_pending) is not int or max_pending < 1:
            raise ValueError(f"max_pending must be an int >= 1, got {max_pending!r}")
        if flush_interval < 0 or timeout < 0 or (keep is not None and keep <= 0):
            raise ValueError(
                f"flush_interval and timeout must be >= 0 and keep > 0, got {flush_interval}, {timeout}, {keep}"
            )
        self.path = os.path.abspath(os.path.expanduser(path))
        self.keep = keep
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.timeout = timeout
        self._live: dict[int, Task] = {}
        self._pending: collections.deque[Task] = collections.deque()
        # "dirty": records wait (wakes the idle writer); "urgent": skip the
        # batching window (flush, close, or the buffer is full).
        self._dirty = threading.Event()
        self._dirty_is_set = self._dirty.is_set
        self._urgent = threading.Event()
        self._room = threading.Condition(threading.Lock())
        self._waiting = 0
        self._markers: list[threading.Event] = []
        self._markers_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._closing = False
        self._closed = False
        self._writer_done = False
        self._close_deadline = 0.0
        self._failed: BaseException | None = None
        # After a permanent failure: tasks whose final record was lost.
        self._dropped = 0
        self._lost: set[int] = set()
        self._lost_lock = threading.Lock()
        self._stats = {
            "written": 0,
            "commits": 0,
            "largest_commit": 0,
            "blocked": 0,
            "retries": 0,
            "pruned": 0,
            "converted": 0,
            "rejected": 0,
        }
        # Set by close(): a retrying writer stops waiting at once.
        self._closing_event = threading.Event()
        # stop(wait=N)'s deadline for close() (time.monotonic()), if it gave one.
        self._stop_deadline: float | None = None
        # Reports a permanent failure as an internal error of the supervisor.
        self._report: Callable[[BaseException, str], None] | None = None
        # Test seams: called by the writer before and after each write
        # transaction, and by a finishing thread when it starts waiting for room.
        self._before_write: Callable[[], None] | None = None
        self._after_write: Callable[[], None] | None = None
        self._on_block: Callable[[], None] | None = None
        self._conn = open_db(self.path, create=True, timeout=timeout)
        try:
            #: This store's row in the ``runs`` table.
            self.run_id = begin_run(self._conn, self.path, supervisor_name, timeout)
            # The file this store writes: the path must keep naming it.
            self._file = FileCheck(self.path)
        except BaseException:
            self._conn.close()
            raise
        values = f"({self.run_id:d}, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)"
        self._row_sql = f"INSERT OR REPLACE INTO tasks VALUES {values}"
        self._chunk_sql = f"INSERT OR REPLACE INTO tasks VALUES {', '.join([values] * _CHUNK)}"
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name=f"atasker_sqlite_store_{self.run_id}", daemon=True)
        self._thread.start()
        # A store whose supervisor never finished stopping is closed at exit
        # (daemon writer: it must not keep the interpreter alive).
        lifecycle.at_exit(self._close_at_exit)

    @classmethod
    def from_url(cls, url: str, supervisor: Any = None) -> SQLiteStore:
        """The :class:`~atasker.StatusStoreType` factory: ``sqlite:///PATH?options`` (see :func:`resolve_url`)."""
        path, kwargs = resolve_url(url)
        store = cls(path, supervisor_name=getattr(supervisor, "name", "supervisor"), **kwargs)
        store._report = getattr(supervisor, "report_internal_error", None)
        return store

    # ------------------------------------------------------------ hot path

    def task_queued(self, task: Task) -> None:
        """Record a queued task (never blocks)."""
        self._live[task.id] = task
        self._pending.append(task)
        if not self._dirty_is_set():
            self._dirty.set()

    def task_started(self, task: Task) -> None:
        """Record that a task started (never blocks)."""
        self._pending.append(task)
        if not self._dirty_is_set():
            self._dirty.set()

    def task_finished(self, task: Task) -> None:
        """Drop the live record and queue the final one.

        Blocks while the buffer is full, unless *task* was cancelled:
        cancelling (``Task.cancel()``, ``stop()``) never waits for the disk,
        and a cancelled task was in memory anyway.
        """
        self._live.pop(task.id, None)
        pending = self._pending
        pending.append(task)
        if len(pending) >= self.max_pending and task.outcome != "cancelled":
            self._wait_for_room()
        elif not self._dirty_is_set():
            self._dirty.set()

    def get(self, task_id: int) -> Task | None:
        """The live record of a queued or running task, else ``None`` (the seed's semantics)."""
        return self._live.get(task_id)

    def _wait_for_room(self) -> None:
        self._urgent.set()
        self._dirty.set()
        with self._room:
            if len(self._pending) >= self.max_pending and self._failed is None and not self._writer_done:
                self._stats["blocked"] += 1
                if self._on_block is not None:
                    self._on_block()
                self._waiting += 1
                try:
                    while len(self._pending) >= self.max_pending and self._failed is None and not self._writer_done:
                        self._room.wait()
                finally:
                    self._waiting -= 1
        if self._failed is not None:  # a caller that kept a bound method from before the failure
            self._count_lost()

    # ------------------------------------------------------------ public

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record handed over before this call is committed.

        :returns: ``False`` if *timeout* seconds passed first.
        :raises StatusStoreError: the writer failed (records were lost).
        """
        if self._closed:
            self._raise_if_failed()
            return True
        marker = threading.Event()
        with self._markers_lock:
            if self._writer_done:
                marker.set()
            else:
                self._markers.append(marker)
        self._urgent.set()
        self._dirty.set()
        done = marker.wait(timeout)
        self._raise_if_failed()
        return done

    def stats(self) -> dict[str, Any]:
        """Counters: rows ``written``, ``commits``, ``largest_commit``, times a
        finishing thread ``blocked`` on a full buffer, write ``retries``,
        rows ``pruned``, records ``dropped`` after a permanent failure,
        records ``converted`` by :func:`~atasker.builtin.sqlite_store.rows.storable`, records ``rejected``
        even then (logged; expected to stay 0), and ``pending`` / ``live`` now."""
        return {**self._stats, "dropped": self._dropped, "pending": len(self._pending), "live": len(self._live)}

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Commit everything, mark the run stopped, stop the writer (idempotent).

        Called by the supervisor's ``stop()`` once every task has ended.

        :param timeout: how long to keep retrying a failing disk; a
            ``stop(wait=N)`` that began earlier bounds it to its own deadline.
        :raises StatusStoreError: some records could not be written, or the
            file was removed or replaced while the store wrote it.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        lifecycle.cancel_at_exit(self._close_at_exit)
        deadline = time.monotonic() + timeout
        if self._stop_deadline is not None:
            deadline = min(deadline, self._stop_deadline)
        self._close_deadline = deadline
        self._closing = True
        self._closing_event.set()
        self._urgent.set()
        self._dirty.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        late = len(self._pending)  # handed over after the writer's last drain
        if late:
            self._count_lost()
        self._raise_if_failed(late)

    def stopping(self, wait: object) -> None:
        """``stop(wait)`` began: bound :meth:`close`'s retries by its deadline.

        ``wait=False`` allows one attempt, ``wait=N`` seconds until
        ``N`` s from now, ``wait=True`` the default ``CLOSE_TIMEOUT``.
        """
        if wait is True:
            return
        try:
            seconds = 0.0 if wait is False else float(wait)  # type: ignore[arg-type]  # stop() validates it
        except (TypeError, ValueError, OverflowError):
            return
        if math.isfinite(seconds):
            self._stop_deadline = time.monotonic() + max(seconds, 0.0)

    def _raise_if_failed(self, late: int = 0) -> None:
        if self._failed is None and not late:
            return
        cause = f": {type(self._failed).__name__}: {self._failed}" if self._failed is not None else ""
        raise StatusStoreError(
            f"status store {self.path}: {self._dropped} task record(s) could not be written{cause}"
        ) from self._failed

    def _close_at_exit(self) -> None:
        if os.getpid() != self._pid:  # a forked child must not close its parent's run
            return
        try:
            self.close()
        except Exception:
            logger.exception("atasker status store %s: closing at exit failed", self.path)

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path} run {self.run_id}>"

    # -------------------------------------------------------------- writer

    def _run(self) -> None:
        signals_to_main_thread()  # Ctrl-C goes to the main thread
        markers: list[threading.Event] = []  # flush() callers waiting on this batch
        try:
            if self.keep is not None:
                self._prune()
            next_flush = 0.0
            while True:
                self._dirty.wait()
                if not self._closing:
                    delay = next_flush - time.monotonic()
                    if delay > 0:
                        self._urgent.wait(delay)
                self._urgent.clear()
                self._dirty.clear()
                with self._markers_lock:
                    markers, self._markers = self._markers, []
                pending = self._pending
                popleft = pending.popleft
                batch = [popleft() for _ in range(len(pending))]
                with self._room:
                    if self._waiting:
                        self._room.notify_all()
                # A huge backlog is written in several transactions, so that
                # other writers of the file are not locked out for long.
                for i in range(0, len(batch), _MAX_BATCH):
                    try:
                        self._commit(batch[i : i + _MAX_BATCH])
                    except BaseException:
                        self._pending.extendleft(reversed(batch[i:]))  # counted as lost by _fail
                        raise
                next_flush = time.monotonic() + self.flush_interval
                self._file.check()
                for marker in markers:
                    marker.set()
                if self._closing and not self._pending:
                    break
                if self.keep is not None and time.monotonic() >= self._next_prune:
                    self._prune()
            self._file.check()
            self._finish_run()
        except BaseException as exc:
            if not isinstance(exc, StatusStoreError):
                # SQLite's own error ("file is not a database") hides the cause.
                try:
                    self._file.check()
                except StatusStoreError as file_error:
                    file_error.__cause__ = exc
                    exc = file_error
            self._fail(exc)
        finally:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            with self._markers_lock:
                self._writer_done = True
                markers += self._markers
                self._markers = []
            for marker in markers:  # flush() raises if the writer failed
                marker.set()
            with self._room:
                self._room.notify_all()

    def _insert(self, plain: list[tuple[Any, ...]], with_error: list[tuple[Any, ...]]) -> None:
        """The statements of one write transaction (the caller begins and commits)."""
        conn = self._conn
        # Multi-row INSERTs of _CHUNK rows: SQLite releases the GIL once per
        # statement, not once per row as executemany does.
        full = len(plain) - len(plain) % _CHUNK
        if full:
            flat = list(itertools.chain.from_iterable(plain[:full]))
            sql, step = self._chunk_sql, _CHUNK * PLAIN_COLUMNS
            for i in range(0, len(flat), step):
                conn.execute(sql, flat[i : i + step])
        if full < len(plain):
            conn.executemany(self._row_sql, plain[full:])
        if with_error:
            conn.executemany(REPLACE_SQL, with_error)
        conn.execute("UPDATE runs SET last_write = ? WHERE run_id = ?", (time.time(), self.run_id))

    def _commit(self, batch: list[Task]) -> None:
        plain, with_error = build_rows(batch, self.run_id)
        conn = self._conn
        delay = 0.05
        failing_since: float | None = None
        last_log = 0.0
        rejected: list[tuple[tuple[Any, ...], BaseException]] = []
        while True:
            try:
                if self._before_write is not None:
                    self._before_write()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    try:
                        self._insert(plain, with_error)
                    except RECORD_ERRORS:
                        # A value SQLite cannot hold (a huge priority, a name that is
                        # not text, a lone surrogate): convert this batch once, then
                        # insert row by row so that nothing else is lost.
                        self._rollback()
                        plain, with_error, converted = convert(plain, with_error)
                        self._stats["converted"] += converted
                        conn.execute("BEGIN IMMEDIATE")
                        rejected = insert_each(conn, self._row_sql, self.run_id, plain, with_error)
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            except sqlite3.Error as exc:
                if not is_transient(exc):
                    raise
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                if now - last_log >= 10.0:
                    last_log = now
                    logger.warning(
                        "atasker status store %s: writing %d record(s) failed (%s); retrying "
                        "(finishing threads wait once %d records are pending)",
                        self.path,
                        len(plain) + len(with_error),
                        exc,
                        self.max_pending,
                    )
                if self._closing and now >= self._close_deadline:
                    raise _GiveUp(f"the disk did not recover before close: {exc}") from exc
                self._stats["retries"] += 1
                # The writer waits for the disk, nobody waits for the writer;
                # close() cuts the wait short, to retry once more and meet its deadline.
                wait = delay if not self._closing else min(delay, max(0.0, self._close_deadline - now))
                self._closing_event.wait(wait)
                delay = min(delay * 2, 1.0)
                continue
            if failing_since is not None:
                logger.warning(
                    "atasker status store %s: writing works again after %.1f s",
                    self.path,
                    time.monotonic() - failing_since,
                )
            if rejected:
                log_rejected(self.path, rejected, self._stats["rejected"])
                self._stats["rejected"] += len(rejected)
            written = len(plain) + len(with_error) - len(rejected)
            stats = self._stats
            stats["written"] += written
            stats["commits"] += 1
            if written > stats["largest_commit"]:
                stats["largest_commit"] = written
            if self._after_write is not None:
                self._after_write()
            return

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _prune(self) -> None:
        assert self.keep is not None
        self._next_prune = time.monotonic() + min(3600.0, max(60.0, self.keep / 24))
        try:
            deleted = prune(self._conn, self.keep, spare_run=self.run_id)
        except sqlite3.Error as exc:  # retention is best effort; the next prune retries
            logger.warning("atasker status store %s: pruning history failed: %s", self.path, exc)
            return
        self._stats["pruned"] += deleted["tasks"]

    def _finish_run(self) -> None:
        now = time.time()
        try:
            self._conn.execute("UPDATE runs SET stopped = ?, last_write = ? WHERE run_id = ?", (now, now, self.run_id))
        except sqlite3.Error as exc:
            logger.warning("atasker status store %s: could not mark run %s stopped: %s", self.path, self.run_id, exc)

    def _fail(self, exc: BaseException) -> None:
        """The writer cannot go on: count what is lost from now on, loudly.

        The ``task_*`` methods are replaced by counting ones (instance
        attributes shadow the class's methods), so memory stays bounded and
        no thread ever waits for a writer that is gone.
        """
        self._failed = exc
        # Swapped for the rest of the run, so the hot path checks no flag.
        self.task_queued = self._queued_after_failure  # type: ignore[method-assign]  # see above
        self.task_started = self._started_after_failure  # type: ignore[method-assign]  # see above
        self.task_finished = self._finished_after_failure  # type: ignore[method-assign]  # see above
        self._count_lost()
        report = self._report
        logger.error(
            "atasker status store %s: writing failed permanently (%s: %s); task records are no longer "
            "written (%d lost so far; close() will raise)",
            self.path,
            type(exc).__name__,
            exc,
            self._dropped,
            exc_info=None if report is not None else exc,  # the report logs the traceback
        )
        if report is not None:
            report(exc, f"status store {self.path}")

    def _count_lost(self) -> None:
        """Empty the buffer; count each finished task in it as lost, once."""
        pending = self._pending
        with self._lost_lock:
            for _ in range(len(pending)):
                task = pending.popleft()
                if task.outcome is not None and task.id not in self._lost:
                    self._lost.add(task.id)
                    self._dropped += 1

    def _queued_after_failure(self, task: Task) -> None:
        self._live[task.id] = task

    def _started_after_failure(self, task: Task) -> None:
        pass

    def _finished_after_failure(self, task: Task) -> None:
        self._live.pop(task.id, None)
        with self._lost_lock:
            if task.id in self._lost:  # counted from the buffer already
                self._lost.discard(task.id)
            else:
                self._dropped += 1


@hookimpl
def atasker_register_status_stores(register: Callable[[StatusStoreType], None]) -> None:
    """Register status store ``sqlite://``."""
    register(
        StatusStoreType(
            "sqlite",
            SQLiteStore.from_url,
            doc="task history in an SQLite file: sqlite:///rel/tasks.db or sqlite:////abs/tasks.db?keep=7d "
            "(see atasker status)",
        )
    )


@hookimpl
def atasker_supervisor_stopping(supervisor: Any, wait: bool | float, cancel_tasks: bool) -> None:
    """Bound the SQLite store's closing retries by ``stop(wait)``'s deadline."""
    store = supervisor.status_store
    if isinstance(store, SQLiteStore):
        store.stopping(wait)


@hookimpl
def atasker_register_commands(register: Callable[[CommandType], None]) -> None:
    """Register ``atasker status``."""
    from atasker.builtin.sqlite_store import cli

    register(
        CommandType("status", "live counts and task history from an SQLite status store", cli.add_arguments, cli.run)
    )
