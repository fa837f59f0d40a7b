"""From task handles to ``tasks`` rows, and what to do with a row SQLite refuses.

Used by the store's writer thread (:mod:`.store`)::

    batch of handles ──build_rows──▶ (plain, with_error) ──INSERT──▶ COMMIT
                                            │ refused (OverflowError, UnicodeEncodeError, ...)
                                            ▼
                               convert (storable) ──insert_each──▶ COMMIT; rejected rows logged

The fast path binds the handles' fields untouched (built by ``operator``
functions in C); only a batch SQLite refused is converted, row by row.
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
import sqlite3
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atasker.core.task import Task

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_MESSAGE",
    "PLAIN_COLUMNS",
    "RECORD_ERRORS",
    "build_rows",
    "convert",
    "describe_error",
    "insert_each",
    "log_rejected",
    "storable",
]

logger = logging.getLogger("atasker")

#: Error messages are cut to this many characters.
MAX_MESSAGE = 1000
#: The range of an SQLite INTEGER (signed 64 bits).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: What binding a value SQLite cannot hold raises (a record's fault, not the
#: database's): too large an int, text that is not UTF-8, a type sqlite3 does
#: not know, a constraint of the schema.
RECORD_ERRORS = (
    OverflowError,
    ValueError,
    TypeError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    sqlite3.IntegrityError,
)

#: A row with an error, all eleven columns.
REPLACE_SQL = (
    "INSERT OR REPLACE INTO tasks (run_id, task_id, name, tt, priority, time_queued, time_started, "
    "time_finished, outcome, error_type, error_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Rows without an error are bound as (id, name, tt, priority, time_queued,
# time_started, time_finished, outcome); run_id is a literal in the SQL.
_get_plain = operator.attrgetter(
    "id", "name", "tt", "priority", "time_queued", "time_started", "time_finished", "outcome"
)
_get_id = operator.attrgetter("id")
_get_error = operator.attrgetter("error")
#: Values in a row without an error.
PLAIN_COLUMNS = 8
#: Rejected records are logged this many times per store at most.
MAX_REJECT_LOGS = 10

Row = tuple[Any, ...]


def describe_error(exc: BaseException) -> tuple[str, str]:
    """``("ValueError", "bad input")`` -- the type (module-qualified unless
    built-in) and the message, cut to :data:`MAX_MESSAGE` characters."""
    cls = type(exc)
    module = getattr(cls, "__module__", "") or ""
    name = cls.__qualname__ if module in ("builtins", "__main__", "") else f"{module}.{cls.__qualname__}"
    try:
        message = str(exc)
    except Exception as err:  # a broken __str__ must not stop the writer
        message = f"<str() raised {type(err).__name__}>"
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return name, message


def build_rows(batch: list[Task], run_id: int) -> tuple[list[Row], list[Row]]:
    """Rows for the tasks in *batch*: ``(plain, with_error)``.

    One row per task, from its fields as they are now: every event of a
    task is the same object, so the last state wins, and a state read
    mid-transition is overwritten by the event that follows it
    (``task_finished`` comes after ``outcome`` and ``error`` are set).
    The common case (no error) is built by ``operator`` functions in C:
    the writer holds the GIL as briefly as possible.
    """
    tasks = dict(zip(map(_get_id, batch), batch, strict=True)).values()
    plain = list(map(_get_plain, itertools.filterfalse(_get_error, tasks)))
    with_error = []
    for t in filter(_get_error, tasks):
        outcome = t.outcome
        if outcome == "failed" and isinstance(t.error, TimeoutError):
            outcome = "timed out"
        etype, message = describe_error(t.error)
        name = t.name if type(t.name) is str else _text(t.name)
        times = (t.time_queued, t.time_started, t.time_finished)
        with_error.append((run_id, t.id, name, t.tt, t.priority, *times, outcome, etype, message))
    return plain, with_error


def _text(value: object) -> str:
    """*value* as text SQLite can hold: ``str()``, lone surrogates escaped."""
    if type(value) is not str:
        try:
            value = str(value)
        except Exception:  # a broken __str__ must not stop the writer
            return f"<unprintable {type(value).__qualname__}>"
    assert isinstance(value, str)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _integer(value: object) -> int:
    """*value* as an SQLite INTEGER: clamped to the signed 64-bit range."""
    number: int = int(value)  # type: ignore[call-overload]  # a priority: an int (checked at submit)
    return min(max(number, INT64_MIN), INT64_MAX)


def _stamp(value: object) -> float | None:
    """A time stamp as a REAL, or ``None`` (``NULL``) if it is not a finite number."""
    try:
        stamp = None if value is None else float(value)  # type: ignore[arg-type]  # any number
    except (TypeError, ValueError, OverflowError):
        return None
    return stamp if stamp is not None and math.isfinite(stamp) else None


def storable(row: Row) -> Row:
    """A ``tasks`` row (without ``run_id``) with every value made one SQLite can hold.

    The rule, applied only to a batch that SQLite refused as it was:

    * ``priority``: clamped to SQLite's signed 64-bit INTEGER, so a priority
      of ``2**63`` or more is stored as ``2**63 - 1`` (still the lowest
      priority in the file, as it was the lowest in the queue);
    * ``name`` and the text columns: ``str(value)`` (``"<unprintable T>"``
      if that raises); characters UTF-8 cannot encode (lone surrogates)
      are stored backslash-escaped: ``"\\udc80"``;
    * times: a finite float, else ``NULL``.

    :raises Exception: a value not even ``int()`` converts (the row is
        then rejected alone).
    """
    task_id, name, tt, priority, queued, started, finished, outcome, *error = row
    fixed = (
        _integer(task_id),
        _text(name),
        _text(tt),
        _integer(priority),
        _stamp(queued),
        _stamp(started),
        _stamp(finished),
        None if outcome is None else _text(outcome),
    )
    return fixed + tuple(None if e is None else _text(e) for e in error)


def convert(plain: list[Row], with_error: list[Row]) -> tuple[list[Row], list[Row], int]:
    """The rows of a batch SQLite refused, each made :func:`storable`; and how many changed."""
    converted = 0
    rows: list[list[Row]] = [[], []]
    for out, source, skip in ((rows[0], plain, 0), (rows[1], with_error, 1)):
        for row in source:
            try:
                fixed = storable(row[skip:])  # rows with an error start with run_id
            except Exception:  # not convertible: insert_each rejects it alone
                fixed = row[skip:]
            converted += fixed != row[skip:]
            out.append(row[:skip] + fixed)
    return rows[0], rows[1], converted


def insert_each(
    conn: sqlite3.Connection, row_sql: str, run_id: int, plain: list[Row], with_error: list[Row]
) -> list[tuple[Row, BaseException]]:
    """Insert row by row; return the rows SQLite still refused (the caller begins and commits).

    A refused row undoes only its own statement; the transaction goes on.
    """
    rejected: list[tuple[Row, BaseException]] = []
    for sql, source in ((row_sql, plain), (REPLACE_SQL, with_error)):
        for row in source:
            try:
                conn.execute(sql, row)
            except RECORD_ERRORS as exc:
                rejected.append((row, exc))
    conn.execute("UPDATE runs SET last_write = ? WHERE run_id = ?", (time.time(), run_id))
    return rejected


def log_rejected(path: str, rejected: list[tuple[Row, BaseException]], before: int) -> None:
    """Log the records of *rejected* as errors (once their batch committed without them).

    :param before: how many records this store rejected before (at most
        :data:`MAX_REJECT_LOGS` are logged per store).
    """
    for n, (row, exc) in enumerate(rejected, before + 1):
        if n > MAX_REJECT_LOGS:
            return
        logger.error(
            "atasker status store %s: the record of task %r could not be written and is dropped "
            "(%s: %s); the other records are written%s",
            path,
            row[1] if len(row) > PLAIN_COLUMNS else row[0],
            type(exc).__name__,
            exc,
            "" if n < MAX_REJECT_LOGS else " (no more such messages)",
        )
