"""``atasker status``: live counts and task history from an SQLite status store.

Reads the database read-only (``--keep`` aside; an immutable snapshot in a
directory it cannot write, see :func:`.db.open_db`), so it may run in another
process, on the same machine, while a supervisor writes::

    atasker status --db sqlite:////var/lib/myapp/tasks.db --since 10m   # the application's URL
    atasker status --db /var/lib/myapp/tasks.db                         # or a plain path
    ATASKER_STATUS_STORE=sqlite:///tasks.db atasker status --json       # or the application's setting
    atasker status --db tasks.db --watch --interval 1s
    atasker status --db tasks.db --keep 7d      # prune, then show
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TextIO

from atasker.builtin.sqlite_store.db import (
    COUNT_KEYS,
    SnapshotConnection,
    StatusStoreError,
    open_db,
    parse_duration,
    parse_keep,
    priority_label,
    prune,
    summary,
)
from atasker.builtin.sqlite_store.url import resolve_url

__all__ = ["add_arguments", "database_path", "render", "run"]

#: The environment variable the application reads its store URL from.
ENV = "ATASKER_STATUS_STORE"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _keep(text: str) -> float:
    try:
        return parse_keep(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def database_path(db: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The absolute path of the database that ``--db`` *db* names.

    *db* is the application's store URL (``sqlite:///tasks.db``,
    ``sqlite:////var/lib/app/tasks.db``, options ignored) or a plain path;
    without it, :envvar:`ATASKER_STATUS_STORE`, which must be an
    ``sqlite://`` URL.

    :raises ValueError: neither is given, or they are not what is expected.
    """
    if db is None:
        url = (os.environ if environ is None else environ).get(ENV, "")
        if not url:
            raise ValueError(
                f"no status database: pass --db with the application's store URL (sqlite:///tasks.db, "
                f"sqlite:////var/lib/app/tasks.db) or a path, or set {ENV}"
            )
        if not url.startswith("sqlite://"):
            raise ValueError(
                f"{ENV}={url!r} is not an sqlite:// URL; atasker status reads the history of the sqlite store "
                f"only (sqlite:///tasks.db, sqlite:////var/lib/app/tasks.db): pass --db"
            )
        return resolve_url(url, create=False)[0]
    if _URL.match(db):
        if not db.startswith("sqlite://"):
            raise ValueError(
                f"--db {db!r} is not an sqlite:// URL; atasker status reads the history of the sqlite store "
                "only: pass its URL (sqlite:///tasks.db, sqlite:////var/lib/app/tasks.db) or a path"
            )
        return resolve_url(db, create=False)[0]
    return os.path.abspath(os.path.expanduser(db))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``atasker status`` options to *parser*."""
    parser.add_argument(
        "--db",
        metavar="URL|PATH",
        help=f"the application's status store URL (sqlite:///tasks.db, sqlite:////abs/tasks.db) "
        f"or the database file (default: ${ENV})",
    )
    parser.add_argument(
        "--since",
        type=_duration,
        default=3600.0,
        metavar="DURATION",
        help="window for finished tasks, times and failures: 30s, 10m, 2h, 7d (default 1h)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output (one object per refresh)")
    parser.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    parser.add_argument(
        "--interval", type=_duration, default=2.0, metavar="DURATION", help="--watch refresh interval (default 2s)"
    )
    parser.add_argument(
        "--keep",
        type=_keep,
        metavar="DURATION",
        help="first delete history older than this: 7d, 12h, 30m, 45s, 1w -- a unit is required "
        "(opens the file for writing)",
    )
    parser.add_argument("--failures", type=int, default=10, metavar="N", help="recent failures to list (default 10)")
    # For tests and scripts: stop --watch after N refreshes.
    parser.add_argument("--count", type=int, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``atasker status`` with parsed *args*; return the exit status."""
    out = out or sys.stdout
    try:
        path = database_path(args.db)
    except ValueError as exc:
        print(f"atasker status: {exc}", file=sys.stderr)
        return 2
    pruned = None
    try:
        if args.keep is not None:
            conn = open_db(path)
            try:
                pruned = prune(conn, args.keep)
            finally:
                conn.close()
        conn = open_db(path, readonly=True)
    except (StatusStoreError, sqlite3.Error) as exc:
        where = "" if isinstance(exc, StatusStoreError) else f"{path}: "
        print(f"atasker status: {where}{exc}", file=sys.stderr)
        return 1
    tty = out.isatty()
    frames = 0
    try:
        while True:
            if frames and isinstance(conn, SnapshotConnection):  # a snapshot never sees new commits
                conn.close()
                conn = open_db(path, readonly=True)
            data = summary(conn, args.since, failures=args.failures)
            data["db"] = path
            if pruned is not None:
                data["pruned"] = pruned
            if args.json:
                out.write(json.dumps(data) + "\n" if args.watch else json.dumps(data, indent=2) + "\n")
            else:
                if args.watch and tty:
                    out.write("\x1b[H\x1b[2J")  # home, clear: refresh in place
                elif frames:
                    out.write("\n")
                out.write(render(data) + "\n")
            out.flush()
            frames += 1
            if not args.watch or (args.count is not None and frames >= args.count):
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    except (StatusStoreError, sqlite3.Error) as exc:
        where = "" if isinstance(exc, StatusStoreError) else f"{path}: "
        print(f"atasker status: {where}{exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()


# -------------------------------------------------------------- rendering


def _clock(stamp: float | None, now: float) -> str:
    if stamp is None:
        return "-"
    dt = datetime.fromtimestamp(stamp)
    return dt.strftime("%H:%M:%S" if now - stamp < 86400 else "%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.001:
        return f"{value * 1e6:.0f} us"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    if value < 120:
        return f"{value:.2f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _window(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _table(headers: list[str], rows: list[list[str]], left: int) -> list[str]:
    """Columns aligned; the first *left* columns left-aligned, the rest right."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for r in [headers, *rows]:
        cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return lines


def render(data: dict[str, Any]) -> str:
    """The text report of a :func:`~atasker.builtin.sqlite_store.db.summary`."""
    now = data["now"]
    window = _window(data["since"])
    lines = [f"{data.get('db', 'status')}  at {_clock(now, 0)} -- finished in the last {window}"]
    if "pruned" in data:
        lines.append(f"pruned {data['pruned']['tasks']} task(s) and {data['pruned']['runs']} run(s)")
    for run in data["runs"]:
        state = run["state"]
        if state == "stopped":
            what = f"stopped {_clock(run['stopped'], now)}"
        elif state == "dead":
            what = f"DEAD (process gone, last write {_clock(run['last_write'], now)})"
        else:
            ago = max(0.0, now - run["last_write"])
            what = f"{state}, last write {_seconds(ago)} ago"
        lines.append(
            f"run {run['run_id']}: supervisor {run['supervisor']!r}, pid {run['pid']} on {run['host']}, "
            f"started {_clock(run['started'], now)}, {what}"
        )
    lines.append("")
    if not data["counts"]:
        lines.append(f"no tasks queued, running, or finished in the last {window}")
        return "\n".join(lines)
    keys = list(COUNT_KEYS)
    totals = dict.fromkeys(keys, 0)
    rows = []
    for c in data["counts"]:
        rows.append([c["tt"], priority_label(c["priority"]), *(str(c[k]) for k in keys)])
        for k in keys:
            totals[k] += c[k]
    if len(rows) > 1:
        rows.append(["total", "", *(str(totals[k]) for k in keys)])
    lines += _table(["task type", "priority", *(k.replace("_", " ") for k in keys)], rows, left=2)
    if data["times"]:
        lines.append("")
        rows = [
            [
                priority_label(t["priority"]),
                str(t["tasks"]),
                *(_seconds(t.get(k)) for k in ("wait_p50", "wait_p95", "run_p50", "run_p95")),
            ]
            for t in data["times"]
        ]
        lines += _table(["priority", "tasks", "wait p50", "wait p95", "run p50", "run p95"], rows, left=1)
    if data["failures"]:
        lines.append("")
        lines.append("recent failures:")
        for f in data["failures"]:
            message = (f["error_message"] or "").splitlines()[0] if f["error_message"] else ""
            if len(message) > 120:
                message = message[:117] + "..."
            error = f"{f['error_type']}: {message}" if f["error_type"] else f["outcome"]
            lines.append(
                f"  {_clock(f['time_finished'], now)}  run {f['run_id']} task {f['task_id']} {f['name']!r}  "
                f"{f['tt']} {priority_label(f['priority'])}  {f['outcome']}: {error}"
            )
    return "\n".join(lines)
