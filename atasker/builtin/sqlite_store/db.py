"""The SQLite status database: schema, checked opening, retention, queries.

Shared by the ``sqlite`` status store (:mod:`atasker.builtin.sqlite_store`),
which writes it from a background thread, and ``atasker status``
(:mod:`atasker.builtin.sqlite_store.cli`), which reads it from any other process::

    store writer thread ──BEGIN IMMEDIATE / REPLACE rows / COMMIT──▶ tasks.db (WAL)
                                                                      │
    atasker status (another process) ◀──── read-only snapshot ────────┘

Schema (version 1; ``PRAGMA application_id`` marks the file as atasker's and
``PRAGMA user_version`` holds the schema version)::

    runs(run_id PK, host, pid, supervisor, started, last_write, stopped)
    tasks(run_id, task_id, name, tt, priority, time_queued, time_started,
          time_finished, outcome, error_type, error_message)
          PRIMARY KEY (run_id, task_id)

One ``runs`` row per store opened (one per supervisor start): task ids are
unique per process only, so ``(run_id, task_id)`` identifies a task across
restarts and processes.  ``outcome`` is ``NULL`` while the task is queued
(``time_started IS NULL``) or running, then one of :data:`OUTCOMES`.
Times are ``time.time()`` stamps.  Arguments and results are never stored.
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import time
from typing import Any
from urllib.parse import quote

from atasker.core.task import TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL
from atasker.errors import AtaskerError

__all__ = [
    "APPLICATION_ID",
    "COUNT_KEYS",
    "OUTCOMES",
    "SCHEMA_VERSION",
    "SnapshotConnection",
    "StatusStoreError",
    "open_db",
    "parse_duration",
    "parse_keep",
    "priority_label",
    "prune",
    "summary",
]

#: ``PRAGMA application_id`` of an atasker status database: ``b"atsk"``.
APPLICATION_ID = 0x6174736B
#: The schema version this atasker reads and writes.
SCHEMA_VERSION = 1
#: Values of ``tasks.outcome`` for a finished task.
OUTCOMES = ("completed", "failed", "cancelled", "timed out")
#: The counters of :func:`summary` per task type and priority.
COUNT_KEYS = ("queued", "running", "completed", "failed", "cancelled", "timed_out", "lost")

_SCHEMA = """
CREATE TABLE runs (
    run_id     INTEGER PRIMARY KEY,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    supervisor TEXT NOT NULL,
    started    REAL NOT NULL,
    last_write REAL NOT NULL,
    stopped    REAL
);
CREATE TABLE tasks (
    run_id        INTEGER NOT NULL,
    task_id       INTEGER NOT NULL,
    name          TEXT NOT NULL,
    tt            TEXT NOT NULL,
    priority      INTEGER NOT NULL,
    time_queued   REAL,
    time_started  REAL,
    time_finished REAL,
    outcome       TEXT,
    error_type    TEXT,
    error_message TEXT,
    PRIMARY KEY (run_id, task_id)
) WITHOUT ROWID;
CREATE INDEX tasks_finished ON tasks (time_finished);
CREATE INDEX tasks_unfinished ON tasks (run_id) WHERE outcome IS NULL;
"""

# SQLite result codes (primary, the low byte) worth retrying: the database is
# busy or locked by another connection, the disk is full, an I/O error.
_TRANSIENT_CODES = {5, 6, 10, 13, 15}  # BUSY, LOCKED, IOERR, FULL, PROTOCOL


class StatusStoreError(AtaskerError):
    """A status database cannot be used: missing, foreign, newer, locked, corrupt.

    The message names the file and the cause.
    """


def is_transient(exc: sqlite3.Error) -> bool:
    """Whether retrying *exc* later may succeed (busy, locked, disk full, I/O)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _TRANSIENT_CODES
    text = str(exc).lower()  # Python < 3.11 has no error codes
    return isinstance(exc, sqlite3.OperationalError) and any(
        word in text for word in ("locked", "busy", "disk", "full", "i/o")
    )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


def parse_duration(text: str | float) -> float:
    """Seconds in ``"250ms"``, ``"30s"``, ``"10m"``, ``"2h"``, ``"7d"``, ``"1w"`` or ``"1.5"``.

    :raises ValueError: naming the text, for anything else.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"invalid duration {text!r}: must be >= 0")
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"invalid duration {text!r}: expected a number with an optional unit ms, s, m, h, d or w")
    return float(match.group(1)) * _UNITS[match.group(2)]


#: How a retention period is written; a bare number is refused.
KEEP_FORMS = "7d (days), 12h (hours), 30m (minutes), 45s (seconds) or 1w (weeks)"


def parse_keep(text: str) -> float:
    """Seconds in a retention period: ``"7d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"1w"``.

    Unlike :func:`parse_duration`, the unit is required: ``keep=7`` could
    mean days as well as seconds, so it is refused rather than guessed.

    :raises ValueError: naming the text and the accepted forms.
    """
    match = _DURATION.match(str(text))
    if match and match.group(2) is None:
        raise ValueError(f"keep {text!r} needs a unit: {KEEP_FORMS}; a bare number is not accepted")
    if not match:
        raise ValueError(f"invalid duration {text!r} for keep: expected {KEEP_FORMS}")
    return parse_duration(text)


def priority_label(priority: int) -> str:
    """``"NORMAL (100)"`` for the named priorities, else the number."""
    names = {TASK_CRITICAL: "CRITICAL", TASK_HIGH: "HIGH", TASK_NORMAL: "NORMAL", TASK_LOW: "LOW"}
    name = names.get(priority)
    return f"{name} ({priority})" if name else str(priority)


# ---------------------------------------------------------------- opening


class SnapshotConnection(sqlite3.Connection):
    """A read-only connection opened ``immutable``: the file as it was when opened.

    What :func:`open_db` returns for reading a database in a directory this
    process cannot write (see there); it never sees later commits, so a
    reader that refreshes opens a new one each time.
    """


# SQLITE_READONLY, SQLITE_CANTOPEN: what a read-only WAL connection gets when
# it cannot create the -shm file next to the database.
_NO_SHM_CODES = {8, 14}


def _needs_snapshot(exc: StatusStoreError, path: str) -> bool:
    """Whether a read-only open failed only because no -shm file can be made, with no WAL to read."""
    cause = exc.__cause__
    if not isinstance(cause, sqlite3.Error):
        return False
    code = getattr(cause, "sqlite_errorcode", None)
    if code is not None:
        if (code & 0xFF) not in _NO_SHM_CODES:
            return False
    elif "readonly" not in str(cause) and "unable to open" not in str(cause):  # pragma: no cover - Python < 3.11
        return False
    try:
        wal = os.path.getsize(path + "-wal")
    except OSError:
        wal = 0
    # A non-empty -wal holds commits not yet in the file: an immutable open would miss them.
    return wal == 0 and not os.access(os.path.dirname(path) or ".", os.W_OK)


def open_db(path: str, *, create: bool = False, readonly: bool = False, timeout: float = 5.0) -> sqlite3.Connection:
    """Open the status database at *path* and check that it is one.

    :param create: create the file (mode ``0600``) and the schema if missing;
        otherwise a missing file is an error.
    :param readonly: open read-only (``atasker status``); never writes.
        SQLite reads a WAL database through a ``-shm`` file next to it,
        created by the first connection; in a directory this process cannot
        write, with no ``-wal`` file left (no store has the file open), the
        file is opened ``immutable`` instead: a
        :class:`SnapshotConnection` of the file as it is now.
    :param timeout: seconds to wait for another connection's write lock.
    :returns: a connection in autocommit mode (``isolation_level=None``),
        usable from another thread than the opening one.
    :raises StatusStoreError: naming *path*: it is missing, not an SQLite
        file, an SQLite file atasker did not create, of a newer schema,
        locked, or corrupt.
    """
    created = False
    if create:
        try:
            # O_EXCL: only the creator sets the mode; 0600 because task names
            # and error messages may be private.  SQLite gives the -wal and
            # -shm files the database file's permissions.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            created = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise StatusStoreError(f"cannot create status database {path}: {exc.strerror or exc}") from exc
    elif not os.path.exists(path):
        raise StatusStoreError(f"status database {path} does not exist")
    try:
        return _connect(path, "ro" if readonly else "rw", timeout, created)
    except StatusStoreError as exc:
        if not (readonly and _needs_snapshot(exc, path)):
            raise
    return _connect(path, "ro&immutable=1", timeout, False)


def _connect(path: str, mode: str, timeout: float, created: bool) -> sqlite3.Connection:
    # "file://" + an absolute path: the authority is always empty, even for a
    # path that starts with "//" (which POSIX abspath() keeps).
    uri = f"file://{quote(os.path.abspath(path))}?mode={mode}"
    factory = SnapshotConnection if "immutable" in mode else sqlite3.Connection
    try:
        conn = sqlite3.connect(
            uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False, factory=factory
        )
    except sqlite3.Error as exc:
        if created:
            _remove_empty(path)
        raise StatusStoreError(f"cannot open status database {path}: {exc}") from exc
    try:
        _check(conn, path, writable=mode == "rw", timeout=timeout)
    except BaseException:
        conn.close()
        raise
    return conn


def _remove_empty(path: str) -> None:
    """Remove the file this process just created if it is still empty.

    Called only when SQLite could not open it at all, so that a failed open
    leaves no 0-byte file.  A file that another process has written to
    meanwhile is kept (it is no longer empty).  Once a connection exists the
    file is never removed: a concurrent opener may be using it.
    """
    try:
        if os.path.getsize(path) == 0:
            os.unlink(path)
    except OSError:
        pass


def _error(path: str, exc: sqlite3.Error, timeout: float, doing: str) -> StatusStoreError:
    if isinstance(exc, sqlite3.OperationalError) and is_transient(exc) and "lock" in str(exc).lower():
        err = StatusStoreError(
            f"status database {path} is locked by another connection (waited {timeout:g} s while {doing}): {exc}"
        )
    elif isinstance(exc, sqlite3.OperationalError):
        err = StatusStoreError(f"status database {path}: {exc} (while {doing})")
    else:
        err = StatusStoreError(
            f"status database {path} is corrupt or not an SQLite database ({exc}, while {doing}); "
            "move it away or pick another file"
        )
    err.__cause__ = exc
    return err


def _check(conn: sqlite3.Connection, path: str, writable: bool, timeout: float) -> None:
    doing = "reading its header"
    try:
        app_id, version, objects = _header(conn)
        if writable and objects == 0 and app_id == 0 and version == 0:
            doing = "creating the schema"
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                app_id, version, objects = _header(conn)  # another process may have won
                if objects == 0 and app_id == 0 and version == 0:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    app_id, version = APPLICATION_ID, SCHEMA_VERSION
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
    except sqlite3.Error as exc:
        raise _error(path, exc, timeout, doing) from exc
    if objects == 0 and app_id == 0 and version == 0:
        raise StatusStoreError(f"status database {path} is empty: no atasker status store has written it yet")
    if app_id != APPLICATION_ID:
        raise StatusStoreError(
            f"{path} is an SQLite database that atasker did not create (application_id {app_id:#x}, "
            f"{objects} schema objects); refusing to use it: pick another file"
        )
    if version > SCHEMA_VERSION:
        raise StatusStoreError(
            f"status database {path} has schema version {version}, newer than this atasker understands "
            f"({SCHEMA_VERSION}): upgrade atasker, or pick another file"
        )
    if version != SCHEMA_VERSION:
        raise StatusStoreError(
            f"status database {path} has schema version {version}, which this atasker does not know "
            f"(it writes {SCHEMA_VERSION}): pick another file"
        )
    doing = "reading its tables"
    try:
        # A cheap probe, not an integrity check: walk the root-to-rightmost
        # path of each b-tree, where new rows will be written.
        conn.execute("SELECT run_id FROM runs ORDER BY run_id DESC LIMIT 1").fetchall()
        conn.execute("SELECT task_id FROM tasks ORDER BY run_id DESC, task_id DESC LIMIT 1").fetchall()
        conn.execute("SELECT max(time_finished) FROM tasks").fetchall()
        conn.execute("SELECT max(run_id) FROM tasks WHERE outcome IS NULL").fetchall()
        if writable:
            doing = "switching to WAL mode"
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StatusStoreError(f"status database {path}: cannot switch to WAL mode (journal mode {mode})")
            # NORMAL in WAL mode: a commit survives a crash of the process
            # (kill -9); a power loss may undo the last commits, never corrupt.
            conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:
        raise _error(path, exc, timeout, doing) from exc


def _header(conn: sqlite3.Connection) -> tuple[int, int, int]:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    return app_id, version, objects


def begin_run(conn: sqlite3.Connection, path: str, supervisor: str, timeout: float) -> int:
    """Insert this run's ``runs`` row; return its ``run_id``.

    :raises StatusStoreError: the database is locked or corrupt.
    """
    now = time.time()
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(
                "INSERT INTO runs (host, pid, supervisor, started, last_write) VALUES (?, ?, ?, ?, ?)",
                (socket.gethostname(), os.getpid(), supervisor, now, now),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise _error(path, exc, timeout, "recording a new run") from exc
    assert cur.lastrowid is not None
    return cur.lastrowid


# -------------------------------------------------------------- retention


def prune(
    conn: sqlite3.Connection, keep: float, now: float | None = None, spare_run: int | None = None
) -> dict[str, int]:
    """Delete history older than *keep* seconds; return what was deleted.

    Deletes tasks that finished before the cutoff, unfinished tasks of runs
    that ended (or last wrote) before it, and such runs once they hold no
    task.  *spare_run* (the caller's own run) is never treated as ended.
    Runs in one write transaction.
    """
    cutoff = (time.time() if now is None else now) - keep
    spare = -1 if spare_run is None else spare_run
    conn.execute("BEGIN IMMEDIATE")
    try:
        finished = conn.execute("DELETE FROM tasks WHERE time_finished < ?", (cutoff,)).rowcount
        ended = "SELECT run_id FROM runs WHERE coalesce(stopped, last_write) < ? AND run_id != ?"
        lost = conn.execute(
            f"DELETE FROM tasks WHERE outcome IS NULL AND run_id IN ({ended})", (cutoff, spare)
        ).rowcount
        runs = conn.execute(
            f"DELETE FROM runs WHERE run_id IN ({ended}) AND NOT EXISTS "
            "(SELECT 1 FROM tasks WHERE tasks.run_id = runs.run_id)",
            (cutoff, spare),
        ).rowcount
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return {"tasks": finished + lost, "runs": runs}


# ---------------------------------------------------------------- queries


def _run_state(host: str, pid: int, stopped: float | None, this_host: str) -> str:
    """``"stopped"``, ``"running"``, ``"dead"`` (its process is gone) or ``"unknown"`` (another host)."""
    if stopped is not None:
        return "stopped"
    if host != this_host:
        return "unknown"
    if pid == os.getpid():
        return "running"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:  # exists, another user's
        return "running"
    except OSError:
        return "unknown"
    return "running"


def summary(conn: sqlite3.Connection, since: float, now: float | None = None, failures: int = 10) -> dict[str, Any]:
    """What ``atasker status`` shows, as plain data (the ``--json`` output).

    * ``runs`` -- runs still open or ended in the window, with their state:
      ``running``, ``stopped``, ``dead`` (same host, process gone: killed)
      or ``unknown`` (another host; treated as running);
    * ``counts`` -- per task type and priority: ``queued`` and ``running``
      now (in runs not known dead), tasks finished in the window by outcome,
      and ``lost`` (unfinished in a dead run that last wrote in the window);
    * ``times`` -- per priority, over tasks finished in the window: wait
      (queued -> started) and run (started -> finished) p50/p95, seconds;
    * ``failures`` -- the most recent failed or timed-out tasks in the window.

    Reads in one transaction: a consistent snapshot while a store writes.
    """
    now = time.time() if now is None else now
    start = now - since
    this_host = socket.gethostname()
    conn.execute("BEGIN")
    try:
        runs = []
        state: dict[int, str] = {}
        for run_id, host, pid, sup, started, last_write, stopped in conn.execute(
            "SELECT run_id, host, pid, supervisor, started, last_write, stopped FROM runs ORDER BY run_id"
        ):
            state[run_id] = _run_state(host, pid, stopped, this_host)
            if stopped is None or stopped >= start:
                runs.append(
                    {
                        "run_id": run_id,
                        "host": host,
                        "pid": pid,
                        "supervisor": sup,
                        "started": started,
                        "last_write": last_write,
                        "stopped": stopped,
                        "state": state[run_id],
                    }
                )
        last_writes = {r["run_id"]: r["last_write"] for r in runs}
        counts: dict[tuple[str, int], dict[str, int]] = {}

        def row(tt: str, priority: int) -> dict[str, int]:
            key = (tt, priority)
            if key not in counts:
                counts[key] = dict.fromkeys(COUNT_KEYS, 0)
            return counts[key]

        for run_id, tt, priority, started, n in conn.execute(
            "SELECT run_id, tt, priority, time_started IS NOT NULL, count(*) FROM tasks "
            "WHERE outcome IS NULL GROUP BY 1, 2, 3, 4"
        ):
            run_state = state.get(run_id, "unknown")
            if run_state in ("running", "unknown"):
                row(tt, priority)["running" if started else "queued"] += n
            elif last_writes.get(run_id, 0.0) >= start:
                row(tt, priority)["lost"] += n
        for tt, priority, outcome, n in conn.execute(
            "SELECT tt, priority, outcome, count(*) FROM tasks WHERE time_finished >= ? AND outcome IS NOT NULL "
            "GROUP BY 1, 2, 3",
            (start,),
        ):
            row(tt, priority)[outcome.replace(" ", "_") if outcome in OUTCOMES else "failed"] += n
        times = _percentiles(conn, start)
        fields: tuple[str, ...] = ("run_id", "task_id", "name", "tt", "priority", "outcome", "time_finished")
        fields += ("error_type", "error_message")
        failed = [
            dict(zip(fields, r, strict=True))
            for r in conn.execute(
                f"SELECT {', '.join(fields)} FROM tasks "
                "WHERE time_finished >= ? AND outcome IN ('failed', 'timed out') "
                "ORDER BY time_finished DESC LIMIT ?",
                (start, failures),
            )
        ]
    finally:
        conn.execute("COMMIT")
    return {
        "now": now,
        "since": since,
        "schema_version": SCHEMA_VERSION,
        "runs": runs,
        "counts": [{"tt": tt, "priority": p, **c} for (tt, p), c in sorted(counts.items())],
        "times": times,
        "failures": failed,
    }


def _percentiles(conn: sqlite3.Connection, start: float) -> list[dict[str, Any]]:
    """Nearest-rank p50/p95 of wait and run time per priority, in SQL.

    Window functions sort inside SQLite, so a window of millions of tasks
    is never loaded into Python.  ``rn >= ceil(p * n / 100)`` is written
    ``rn * 100 >= p * n``.
    """
    result: dict[int, dict[str, Any]] = {}
    for column, expr in (
        ("wait", "time_started - time_queued"),
        ("run", "time_finished - time_started"),
    ):
        query = f"""
            WITH w AS (
                SELECT priority, {expr} AS v FROM tasks
                WHERE time_finished >= ? AND time_started IS NOT NULL AND time_queued IS NOT NULL
            ), r AS (
                SELECT priority, v,
                       row_number() OVER (PARTITION BY priority ORDER BY v) AS rn,
                       count(*) OVER (PARTITION BY priority) AS n
                FROM w
            )
            SELECT priority, max(n),
                   min(CASE WHEN rn * 100 >= n * 50 THEN v END),
                   min(CASE WHEN rn * 100 >= n * 95 THEN v END)
            FROM r GROUP BY priority ORDER BY priority
        """
        for priority, n, p50, p95 in conn.execute(query, (start,)):
            entry = result.setdefault(priority, {"priority": priority, "tasks": n})
            entry[f"{column}_p50"] = p50
            entry[f"{column}_p95"] = p95
    return [result[p] for p in sorted(result)]
