"""The SQLite status store against what it cannot control: hostile values,
a full disk, its file removed or replaced, a directory it cannot write.

The full disk is real: a child process lowers its own ``RLIMIT_FSIZE``
(with ``SIGXFSZ`` ignored), so the kernel refuses the writes that would
grow the database's files past the limit (``EFBIG``), exactly where a full
disk refuses them (``ENOSPC``); no root, no mount.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from atasker import TaskSupervisor, hookimpl
from atasker.builtin.sqlite_store import SQLiteStore
from atasker.builtin.sqlite_store.db import StatusStoreError
from atasker.tools.cli import main as cli_main
from tests.conftest import WAIT

ROOT = Path(__file__).resolve().parent.parent.parent
INT64_MAX = 2**63 - 1


def rows(db: Path) -> dict[int, dict[str, Any]]:
    conn = sqlite3.connect(db)
    try:
        conn.row_factory = sqlite3.Row
        return {r["task_id"]: dict(r) for r in conn.execute("SELECT * FROM tasks")}
    finally:
        conn.close()


def store_of(sup: TaskSupervisor) -> SQLiteStore:
    store = sup.status_store
    assert isinstance(store, SQLiteStore)
    return store


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str() for you")


def fail_with_surrogate() -> None:
    raise ValueError("bad bytes: \udc80")


# ------------------------------------------------- one bad record (item 3)


@pytest.mark.parametrize(
    "kind",
    ["priority 2**63", "priority 2**200", "name with a lone surrogate", "name whose str() raises", "message"],
)
def test_one_unstorable_record_is_converted_and_the_writer_goes_on(make_supervisor, tmp_path, kind):
    db = tmp_path / "tasks.db"
    sup = make_supervisor(status_store=f"sqlite:///{db}")
    store = store_of(sup)
    if kind.startswith("priority"):
        odd = sup.submit(int, priority=2**63 if kind.endswith("63") else 2**200, name="odd")
    elif kind == "message":
        odd = sup.submit(fail_with_surrogate, name="odd")
    else:
        odd = sup.submit(int, name="bad \udc80 name" if "surrogate" in kind else Unprintable())
    odd.exception(WAIT)
    assert store.flush(WAIT)  # the writer did not fail
    later = [sup.submit(pow, (2, i), name=f"later {i}") for i in range(20)]
    for i, task in enumerate(later):
        assert task.result(WAIT) == 2**i
    sup.stop()  # no StatusStoreError: nothing was lost
    assert store.stats()["dropped"] == 0
    got = rows(db)
    assert {t.id for t in later} | {odd.id} == set(got)
    assert all(got[t.id]["outcome"] == "completed" for t in later)
    row = got[odd.id]
    if kind.startswith("priority"):
        assert row["priority"] == INT64_MAX  # the documented clamp: still the lowest priority stored
        assert row["name"] == "odd"
    elif kind == "message":
        assert row["outcome"] == "failed" and row["error_message"] == "bad bytes: \\udc80"
    elif "surrogate" in kind:
        assert row["name"] == "bad \\udc80 name"
    else:
        assert row["name"] == "<unprintable Unprintable>"


class Record:
    """What a store reads of a task handle, for a store used directly (as tools do)."""

    def __init__(self, task_id: int, priority: object) -> None:
        self.id, self.name, self.tt, self.priority = task_id, f"task {task_id}", "thread", priority
        self.time_queued = self.time_started = self.time_finished = 1.0
        self.outcome, self.error = "completed", None


class NoInt:
    def __int__(self) -> int:
        raise TypeError("not a number")


def test_a_record_that_cannot_be_stored_in_any_form_is_dropped_alone(tmp_path, caplog):
    db = tmp_path / "tasks.db"
    store = SQLiteStore(str(db))
    try:
        records = [Record(i, NoInt() if i == 3 else 100) for i in range(10)]
        for record in records:
            store.task_finished(record)  # a stand-in for a Task
        assert store.flush(WAIT)
        store.task_finished(Record(10, 100))
    finally:
        store.close()  # no StatusStoreError: the writer went on
    assert set(rows(db)) == set(range(11)) - {3}
    assert store.stats()["rejected"] == 1 and store.stats()["dropped"] == 0
    assert any("task 3" in r.getMessage() and "could not be written" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------- full disk (item 8)

FULL_DISK_CHILD = """
import json, os, resource, signal, sys, threading, time

from atasker import TaskSupervisor

db, limit = sys.argv[1], int(sys.argv[2])
# A real full disk for this process only: writes past `limit` bytes fail
# with EFBIG (SIGXFSZ ignored, so it is an error, not a kill).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
sup = TaskSupervisor(status_store=f"sqlite:///{db}?max_pending=8&flush=0", pool_size=2)
sup.start()
store = sup.status_store
blocked = threading.Event()
store._on_block = blocked.set

def fail(i):
    raise ValueError(f"{i} " + "x" * 990)   # big rows: the files grow fast

tasks = [sup.submit(fail, (i,)) for i in range(2000)]
# Until the disk is full (the writer retries) and a finishing thread waits for it.
deadline = time.monotonic() + 30
while not (store.stats()["retries"] and store._waiting) and time.monotonic() < deadline:
    time.sleep(0.01)  # sleep-ok: polls another thread's state, bounded
out = {"blocked": blocked.is_set(), "retries": store.stats()["retries"], "waiting": store._waiting}
queued = [t for t in tasks if t.status == 0]
out["queued"] = len(queued)

def timed(key, fn, limit):
    box = {}
    def run():
        t0 = time.monotonic()
        box["value"] = fn()
        box["seconds"] = time.monotonic() - t0
    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(limit)
    out[key] = box if box else "hung"

timed("cancel", queued[-1].cancel, 10)
timed("cancelled", lambda: queued[-1].cancelled(), 10)
timed("stop", lambda: sup.stop(wait=1), 20)
print(json.dumps(out), flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE")
def test_full_disk_cancel_and_stop_wait_return(tmp_path, figures):
    db = tmp_path / "tasks.db"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FULL_DISK_CHILD), str(db), str(256 * 1024)],
        capture_output=True,
        text=True,
        timeout=WAIT * 9,  # the child bounds each step; this catches a hang at exit
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    # The disk really filled: the writer retried and the finishing threads waited.
    assert out["blocked"] and out["retries"] >= 1 and out["waiting"] >= 1 and out["queued"] > 0, out
    # Cancelling a queued task does not wait for room in the writer's buffer ...
    assert out["cancel"] != "hung" and out["cancel"]["value"] is True, out
    assert out["cancel"]["seconds"] < WAIT / 2, out
    # ... and stop(wait=1) returns after about 1 s: tasks could not finish (False).
    assert out["stop"] != "hung" and out["stop"]["value"] is False, out
    assert out["stop"]["seconds"] < 1 + WAIT / 2, out
    figures(cancel_ms=round(out["cancel"]["seconds"] * 1e3, 3), stop_wait_1_s=round(out["stop"]["seconds"], 3))
    assert "disk I/O error" in proc.stderr or "full" in proc.stderr  # the writer said why it waited
    assert "could not be written" in proc.stderr  # at exit: the lost records are named, loudly


FULL_DISK_AT_STOP_CHILD = """
import json, resource, signal, sys, time

from atasker import TaskSupervisor
from atasker.builtin.sqlite_store.db import StatusStoreError

db, limit = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
sup = TaskSupervisor(status_store=f"sqlite:///{db}?flush=0")
sup.start()
store = sup.status_store

def fail(i):
    raise ValueError(f"{i} " + "x" * 990)

tasks = [sup.submit(fail, (i,)) for i in range(1000)]
for t in tasks:
    t.exception(30)          # every task ended; their records wait for a full disk
t0 = time.monotonic()
try:
    sup.stop(wait=1)
    out = {"raised": None}
except StatusStoreError as exc:
    out = {"raised": str(exc)}
out["seconds"] = time.monotonic() - t0
out["retries"] = store.stats()["retries"]
print(json.dumps(out), flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE")
def test_full_disk_stop_wait_bounds_closing_and_says_what_was_lost(tmp_path, figures):
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FULL_DISK_AT_STOP_CHILD), str(tmp_path / "t.db"), str(256 * 1024)],
        capture_output=True,
        text=True,
        timeout=WAIT * 6,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["retries"] >= 1, out  # the disk really was full
    # stop(wait=1) gave the disk until its deadline, not the 30 s close() allows by default ...
    assert out["seconds"] < 1 + WAIT / 2, out
    figures(stop_wait_1_s=round(out["seconds"], 3), records_lost=out["raised"].split(": ")[1])
    # ... and said what it lost.
    assert out["raised"] and "could not be written" in out["raised"] and "did not recover" in out["raised"], out


# ---------------------------------------- the file removed or replaced (item 13)


class InternalErrors:
    def __init__(self) -> None:
        self.seen: list[tuple[BaseException, str]] = []

    @hookimpl
    def atasker_internalerror(self, exc: BaseException, where: str) -> None:
        self.seen.append((exc, where))


def replace_with_copy(db: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    os.replace(other, db)


@pytest.mark.parametrize("how", ["removed", "replaced", "truncated"])
def test_the_file_removed_or_replaced_mid_run_is_loud(make_supervisor, tmp_path, how, caplog):
    db = tmp_path / "tasks.db"
    errors = InternalErrors()
    sup = make_supervisor(status_store=f"sqlite:///{db}", plugins=[errors])
    store = store_of(sup)
    for _ in range(5):
        sup.submit(int).result(WAIT)
    assert store.flush(WAIT)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the rows now live in the main file
    conn.execute("VACUUM")  # another connection's maintenance: still the same file
    conn.close()
    sup.submit(int).result(WAIT)
    assert store.flush(WAIT)  # not reported
    if how == "removed":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    elif how == "replaced":
        replace_with_copy(db, tmp_path)
    else:
        db.write_bytes(b"")  # `> tasks.db`: the same file, emptied
    sup.submit(int).result(WAIT)
    word = {"removed": "removed", "replaced": "replaced", "truncated": "overwritten"}[how]
    with pytest.raises(StatusStoreError, match=word):
        store.flush(WAIT)
    assert any(word in str(exc) and str(db) in str(exc) for exc, _ in errors.seen), errors.seen
    assert any(r.levelno >= logging.ERROR and word in r.getMessage() for r in caplog.records)
    sup.submit(int).result(WAIT)  # tasks still run
    with pytest.raises(StatusStoreError, match=rf"{db}: \d+ task record.*{word}"):
        sup.stop()


# ------------------------------------ reading from a read-only directory (item 21)


def _status_as_nobody(db: str) -> tuple[int, str]:
    """``atasker status --json`` in a forked child that runs as user ``nobody``."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+): the child only reads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 3
        try:
            os.close(read)
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            out = os.fdopen(write, "w")
            sys.stdout = out
            code = cli_main(["status", "--db", db, "--json"])
            out.flush()
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as fh:
        text = fh.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), text


def test_status_reads_a_database_in_a_directory_it_cannot_write(make_supervisor, capsys):
    # Not under tmp_path: user nobody must be able to reach the directory.
    directory = Path(tempfile.mkdtemp(prefix="atasker-ro-"))
    try:
        db = directory / "tasks.db"
        sup = make_supervisor(status_store=f"sqlite:///{db}")
        for _ in range(3):
            sup.submit(int).result(WAIT)
        sup.stop()  # a clean stop: no -wal or -shm file is left
        db.chmod(0o644)
        directory.chmod(0o555)
        before = sorted(os.listdir(directory)), db.stat().st_mtime_ns
        if os.geteuid() == 0:  # root writes anywhere: read as a user the bits do stop
            code, text = _status_as_nobody(str(db))
        else:
            code = cli_main(["status", "--db", str(db), "--json"])
            text = capsys.readouterr().out
        assert code == 0, text
        data = json.loads(text)
        assert sum(c["completed"] for c in data["counts"]) == 3
        assert (sorted(os.listdir(directory)), db.stat().st_mtime_ns) == before  # nothing written
    finally:
        directory.chmod(0o755)
        shutil.rmtree(directory)
