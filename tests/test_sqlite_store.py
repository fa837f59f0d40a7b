"""The ``sqlite`` status store and ``atasker status``.

Every wait is on an event, a handle or a pipe, bounded by ``WAIT``; the
writer thread is slowed or failed deterministically through the store's
test seams (``_before_write``, ``_after_write``, ``_on_block``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import logging
import os
import selectors
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import atasker.core.task
from atasker import TASK_HIGH, TASK_LOW, TaskSupervisor
from atasker.builtin.memory_store import MemoryStore
from atasker.builtin.sqlite_store import store as sqlite_store
from atasker.builtin.sqlite_store.cli import add_arguments, render
from atasker.builtin.sqlite_store.cli import run as run_status
from atasker.builtin.sqlite_store.db import APPLICATION_ID, SCHEMA_VERSION, StatusStoreError, parse_duration
from atasker.builtin.sqlite_store.store import SQLiteStore, describe_error, parse_url
from atasker.tools.cli import main as cli_main
from tests.conftest import WAIT

ROOT = Path(__file__).resolve().parent.parent


class CustomError(Exception):
    """A non-builtin exception: its type is stored module-qualified."""


# ----------------------------------------------------------------- helpers


@contextlib.contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection that is always closed (sqlite3's own ``with`` does not close)."""
    conn = sqlite3.connect(path)
    try:
        yield conn
    finally:
        conn.close()


def task_rows(path: Path) -> dict[tuple[int, int], dict[str, Any]]:
    """Every row of ``tasks``, keyed by (run_id, task_id)."""
    with connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return {(r["run_id"], r["task_id"]): dict(r) for r in conn.execute("SELECT * FROM tasks")}


def by_task(path: Path) -> dict[int, dict[str, Any]]:
    """Rows of a database with one run, keyed by task id."""
    rows = task_rows(path)
    assert len({run for run, _ in rows}) <= 1
    return {task_id: row for (_, task_id), row in rows.items()}


def sqlite_supervisor(make_supervisor, path: Path, query: str = "", **kwargs: Any) -> TaskSupervisor:
    url = f"sqlite:///{path}" + (f"?{query}" if query else "")  # four slashes: absolute
    return make_supervisor(status_store=url, **kwargs)


def store_of(sup: TaskSupervisor) -> SQLiteStore:
    store = sup.status_store
    assert isinstance(store, SQLiteStore)
    return store


def status_json(path: Path, *extra: str) -> dict[str, Any]:
    """``atasker status --json`` run in this process."""
    out = io.StringIO()
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run_status(parser.parse_args(["--db", str(path), "--json", *extra]), out) == 0
    return json.loads(out.getvalue())


def counts(data: dict[str, Any]) -> dict[tuple[str, int], dict[str, int]]:
    return {
        (c["tt"], c["priority"]): {k: v for k, v in c.items() if k not in ("tt", "priority")} for c in data["counts"]
    }


def readline(proc: subprocess.Popen, timeout: float = WAIT) -> str:
    """One line of a child's stdout, or fail after *timeout* (never hangs)."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            raise AssertionError(f"child printed nothing for {timeout} s; stderr: {proc.communicate()[1]}")
    return proc.stdout.readline().strip()


def child(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def cli(*args: str) -> subprocess.CompletedProcess:
    """The real ``python -m atasker`` in another process."""
    return subprocess.run(
        [sys.executable, "-m", "atasker", *args], capture_output=True, text=True, timeout=WAIT * 3, cwd=ROOT
    )


# ---------------------------------------------------------------- selection


def test_installed_but_never_active_unless_selected(make_supervisor, tmp_path, monkeypatch):
    sup = make_supervisor()
    assert isinstance(sup.status_store, MemoryStore)
    assert "sqlite" in sup.registry("status store").names()
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setenv("ATASKER_STATUS_STORE", f"sqlite:///{tmp_path}/env.db")
    sup = make_supervisor()
    assert store_of(sup).path == str(tmp_path / "env.db")
    monkeypatch.delenv("ATASKER_STATUS_STORE")

    sup = make_supervisor(start=False)
    sup.start(status_store=f"sqlite:///{tmp_path}/start.db")
    assert store_of(sup).path == str(tmp_path / "start.db")
    sup.submit(int).result(WAIT)
    sup.stop()
    assert len(by_task(tmp_path / "start.db")) == 1


# ----------------------------------------------------------------- records


def test_thread_tasks_every_outcome_reaches_the_database(make_supervisor, tmp_path):
    db = tmp_path / "tasks.db"
    sup = sqlite_supervisor(make_supervisor, db, pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    blocker = sup.submit(gate.wait, (WAIT,), name="blocker", priority=TASK_HIGH)
    queued = sup.submit(int, name="never runs", priority=TASK_LOW)
    assert queued.cancel()
    gate.set()
    assert blocker.result(WAIT) is True

    def fail(message):
        raise ValueError(message)

    def custom():
        raise CustomError("custom\nsecond line")

    def slow():
        raise TimeoutError("took too long")

    failed = sup.submit(fail, ("bad input",))
    other = sup.submit(custom)
    timed_out = sup.submit(slow)
    secret = sup.submit(str.upper, ("s3cret-argument",))
    for task in (failed, other, timed_out):
        task.exception(WAIT)
    assert secret.result(WAIT) == "S3CRET-ARGUMENT"
    sup.stop()

    rows = by_task(db)
    assert len(rows) == 6
    b = rows[blocker.id]
    assert (b["name"], b["tt"], b["priority"], b["outcome"], b["error_type"]) == (
        "blocker",
        "thread",
        TASK_HIGH,
        "completed",
        None,
    )
    assert b["time_queued"] <= b["time_started"] <= b["time_finished"]
    assert (b["time_queued"], b["time_started"], b["time_finished"]) == (
        blocker.time_queued,
        blocker.time_started,
        blocker.time_finished,
    )
    q = rows[queued.id]
    assert (q["outcome"], q["priority"], q["time_started"]) == ("cancelled", TASK_LOW, None)
    assert q["time_finished"] is not None
    assert (rows[failed.id]["outcome"], rows[failed.id]["error_type"], rows[failed.id]["error_message"]) == (
        "failed",
        "ValueError",
        "bad input",
    )
    assert rows[other.id]["error_type"] == f"{__name__}.CustomError"
    assert rows[other.id]["error_message"] == "custom\nsecond line"
    assert (rows[timed_out.id]["outcome"], rows[timed_out.id]["error_type"]) == ("timed out", "TimeoutError")
    assert rows[secret.id]["outcome"] == "completed"
    # Neither arguments nor results are stored, anywhere in the files.
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert b"s3cret" not in data and b"S3CRET" not in data, path
    with connect(db) as conn:
        (run,) = conn.execute("SELECT pid, supervisor, stopped FROM runs").fetchall()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert run[0] == os.getpid() and run[1] == sup.name and run[2] is not None


def test_process_tasks_every_outcome_reaches_the_database(make_supervisor, tmp_path):
    db = tmp_path / "tasks.db"
    sup = sqlite_supervisor(make_supervisor, db)
    sup.set_pool("mp", pool_size=4, reserve_normal=0, reserve_high=0)
    completed = sup.submit(pow, (2, 10), tt="mp", priority=TASK_HIGH)
    failed = sup.submit(int, ("not a number",), tt="mp")
    timed_out = sup.submit(time.sleep, (WAIT * 6,), tt="mp", timeout=0.2, name="slow")
    running = sup.submit(time.sleep, (WAIT * 6,), tt="mp", name="cancelled")
    assert sup.get_task_info(running) is running
    assert running.cancel() and running.cancelled()
    assert completed.result(WAIT) == 1024
    assert isinstance(failed.exception(WAIT), ValueError)
    assert isinstance(timed_out.exception(WAIT), TimeoutError)
    for task in (completed, failed, timed_out, running):
        assert sup.get_task_info(task) is None
    sup.stop()

    rows = by_task(db)
    assert {rows[t.id]["tt"] for t in (completed, failed, timed_out, running)} == {"mp"}
    assert (rows[completed.id]["outcome"], rows[completed.id]["priority"]) == ("completed", TASK_HIGH)
    assert (rows[failed.id]["outcome"], rows[failed.id]["error_type"]) == ("failed", "ValueError")
    assert "not a number" in rows[failed.id]["error_message"]
    assert (rows[timed_out.id]["outcome"], rows[timed_out.id]["error_type"]) == ("timed out", "TimeoutError")
    assert "timeout" in rows[timed_out.id]["error_message"]
    assert (rows[running.id]["outcome"], rows[running.id]["error_type"]) == ("cancelled", None)


def test_live_semantics_unchanged(make_supervisor, tmp_path):
    sup = sqlite_supervisor(make_supervisor, tmp_path / "tasks.db", pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    running = sup.submit(gate.wait, (WAIT,))
    queued = sup.submit(int)
    delayed = sup.submit(int, delay=3600)
    assert sup.get_task_info(running) is running and running.status == 1
    assert sup.get_task_info(queued.id) is queued and queued.status == 0
    assert sup.get_task_info(delayed) is delayed
    assert sup.get_task_info(10**9) is None
    assert delayed.cancel()
    assert sup.get_task_info(delayed) is None
    gate.set()
    running.result(WAIT)
    queued.result(WAIT)
    assert sup.get_task_info(running) is None and sup.get_task_info(queued) is None
    assert store_of(sup).stats()["live"] == 0


def test_task_ids_of_several_runs_do_not_collide(make_supervisor, tmp_path, monkeypatch):
    db = tmp_path / "tasks.db"
    ids = []
    for _ in range(2):
        # Task ids restart in every process: simulate two processes.
        monkeypatch.setattr(atasker.core.task, "_task_ids", itertools.count(1))
        sup = sqlite_supervisor(make_supervisor, db)
        ids.append(sup.submit(int).id)
        sup.stop()
    assert ids == [1, 1]
    assert sorted(task_rows(db)) == [(1, 1), (2, 1)]


def test_names_that_are_not_strings_are_stored_as_text(make_supervisor, tmp_path):
    db = tmp_path / "tasks.db"
    sup = sqlite_supervisor(make_supervisor, db)
    task = sup.submit(int, name=("a", "tuple"))
    task.result(WAIT)
    sup.stop()
    assert by_task(db)[task.id]["name"] == "('a', 'tuple')"


# ------------------------------------------------- batching and flushing


def gate_writer(store: SQLiteStore) -> tuple[threading.Event, threading.Event]:
    """Make the writer wait before its next write: returns (entered, release)."""
    entered, release = threading.Event(), threading.Event()

    def before_write():
        entered.set()
        assert release.wait(WAIT)

    store._before_write = before_write
    return entered, release


def test_writes_are_batched_by_a_background_thread(make_supervisor, tmp_path):
    db = tmp_path / "tasks.db"
    sup = sqlite_supervisor(make_supervisor, db)
    store = store_of(sup)
    entered, release = gate_writer(store)
    sup.submit(int).result(WAIT)
    assert entered.wait(WAIT)
    # The writer is stuck on the disk; tasks go on at full speed.
    tasks = [sup.submit(int) for _ in range(300)]
    for task in tasks:
        task.result(WAIT)
    assert store.stats()["pending"] >= 300
    release.set()
    assert store.flush(WAIT)
    stats = store.stats()
    assert stats["written"] >= 301 and stats["commits"] <= 3 and stats["largest_commit"] >= 300
    assert stats["blocked"] == 0
    sup.stop()
    assert {row["outcome"] for row in by_task(db).values()} == {"completed"}
    assert len(by_task(db)) == 301


def test_a_large_backlog_is_written_in_several_transactions(make_supervisor, tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "_MAX_BATCH", 50)
    db = tmp_path / "tasks.db"
    sup = sqlite_supervisor(make_supervisor, db)
    store = store_of(sup)
    entered, release = gate_writer(store)
    sup.submit(int).result(WAIT)
    assert entered.wait(WAIT)
    tasks = [sup.submit(int) for _ in range(400)]  # 1200 events
    for task in tasks:
        task.result(WAIT)
    release.set()
    sup.stop()
    assert store.stats()["commits"] >= 1200 // 50
    assert len(by_task(db)) == 401


def test_records_are_committed_within_the_flush_interval_without_stop(make_supervisor, tmp_path):
    db = tmp_path / "tasks.db"
    sup = sqlite_supervisor(make_supervisor, db, "flush=50ms")
    store = store_of(sup)
    assert store.flush_interval == 0.05
    sup.submit(int).result(WAIT)
    assert store.flush(WAIT)
    committed = threading.Event()
    store._after_write = committed.set
    task = sup.submit(int)
    task.result(WAIT)
    finished = time.monotonic()
    deadline = finished + WAIT
    with connect(db) as reader:
        while True:  # each commit wakes us; stop at the one holding the final record
            assert committed.wait(deadline - time.monotonic()), "the writer did not commit on its own"
            committed.clear()
            row = reader.execute("SELECT outcome FROM tasks WHERE task_id = ?", (task.id,)).fetchone()
            if row == ("completed",):
                break
    # Bound: flush interval + one write; generous for a loaded machine.
    assert time.monotonic() - finished < 2.0


def test_orderly_stop_flushes_everything(make_supervisor, tmp_path):
    db = tmp_path / "tasks.db"
    sup = sqlite_supervisor(make_supervisor, db, "flush=1h", pool_size=4)
    tasks = [sup.submit(int, priority=p) for p in (TASK_LOW, TASK_HIGH) * 50]
    for task in tasks:
        task.result(WAIT)
    assert sup.stop()
    rows = by_task(db)
    assert len(rows) == 100 and {r["outcome"] for r in rows.values()} == {"completed"}
    assert not (tmp_path / "tasks.db-wal").exists()  # checkpointed on close
    with connect(db) as conn:
        assert conn.execute("SELECT stopped IS NOT NULL FROM runs").fetchone() == (1,)


def test_back_pressure_blocks_the_finishing_thread_and_drops_nothing(make_supervisor, tmp_path):
    db = tmp_path / "tasks.db"
    sup = sqlite_supervisor(make_supervisor, db, "max_pending=4", pool_size=1, reserve_normal=0, reserve_high=0)
    store = store_of(sup)
    entered, release = gate_writer(store)
    blocked = threading.Event()
    store._on_block = blocked.set
    sup.submit(int).result(WAIT)
    assert entered.wait(WAIT)
    # Submitting never blocks, even with the buffer over its bound ...
    go = threading.Event()
    tasks = [sup.submit(go.wait, (WAIT,))] + [sup.submit(int) for _ in range(19)]
    go.set()
    # ... but the thread that finishes the first task waits for the writer,
    # before its handle resolves: the pool slows to the disk's pace.
    assert blocked.wait(WAIT)
    assert not tasks[0].done()
    assert sup.get_task_info(tasks[0]) is None  # the live record is already gone
    assert all(t.status == 0 for t in tasks[1:])
    assert store.stats()["pending"] >= 4
    release.set()
    assert tasks[0].result(WAIT) is True
    for task in tasks[1:]:
        assert task.result(WAIT) == 0
    sup.stop()
    stats = store.stats()
    assert stats["blocked"] >= 1 and stats["dropped"] == 0
    rows = by_task(db)
    assert len(rows) == 21 and {r["outcome"] for r in rows.values()} == {"completed"}


def test_many_threads_tiny_buffer_nothing_lost(make_supervisor, tmp_path):
    db = tmp_path / "tasks.db"
    sup = sqlite_supervisor(make_supervisor, db, "max_pending=16&flush=0", pool_size=8)
    tasks: list = []
    lock = threading.Lock()

    def submitter():
        mine = [sup.submit(int) for _ in range(250)]
        with lock:
            tasks.extend(mine)

    threads = [threading.Thread(target=submitter) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    for task in tasks:
        task.result(WAIT)
    sup.stop()
    assert len(tasks) == 1500
    rows = by_task(db)
    assert set(rows) == {t.id for t in tasks}
    assert {r["outcome"] for r in rows.values()} == {"completed"}


def test_a_transient_write_error_is_retried(make_supervisor, tmp_path, caplog):
    db = tmp_path / "tasks.db"
    sup = sqlite_supervisor(make_supervisor, db, "timeout=50ms")
    store = store_of(sup)
    attempts = itertools.count(1)
    retrying = threading.Event()

    def before_write():
        if next(attempts) >= 2:
            retrying.set()

    store._before_write = before_write
    with connect(db) as other:
        other.isolation_level = None
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        task = sup.submit(int)
        task.result(WAIT)
        assert retrying.wait(WAIT)
        other.execute("ROLLBACK")
    assert store.flush(WAIT)
    assert store.stats()["retries"] >= 1
    assert any(str(db) in r.getMessage() and "retrying" in r.getMessage() for r in caplog.records)
    sup.stop()
    assert by_task(db)[task.id]["outcome"] == "completed"


def test_a_permanent_write_error_is_loud_not_silent(make_supervisor, tmp_path, caplog):
    db = tmp_path / "tasks.db"
    sup = sqlite_supervisor(make_supervisor, db)
    store = store_of(sup)

    def before_write():
        raise sqlite3.DatabaseError("database disk image is malformed")

    store._before_write = before_write
    task = sup.submit(int)
    task.result(WAIT)
    with pytest.raises(StatusStoreError, match="could not be written"):
        store.flush(WAIT)
    assert store.stats()["dropped"] >= 1
    assert any(r.levelno == logging.ERROR and "permanently" in r.getMessage() for r in caplog.records)
    sup.submit(int).result(WAIT)  # tasks still run
    with pytest.raises(StatusStoreError, match=rf"{db}: \d+ task record\(s\) could not be written"):
        sup.stop()


# ------------------------------------------------------------------ safety


def test_database_file_is_created_with_mode_0600(tmp_path):
    old = os.umask(0o022)
    try:
        store = SQLiteStore(str(tmp_path / "tasks.db"))
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(tmp_path / "tasks.db").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path / "tasks.db-wal").st_mode) == 0o600
    finally:
        store.close()


def test_schema_version_is_stored_and_a_newer_one_refused(tmp_path):
    db = tmp_path / "tasks.db"
    SQLiteStore(str(db)).close()
    with connect(db) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StatusStoreError, match=rf"{db} has schema version 2, newer than this atasker"):
        SQLiteStore(str(db))
    proc = cli("status", "--db", str(db))
    assert proc.returncode == 1 and "newer than this atasker" in proc.stderr and str(db) in proc.stderr


def test_a_foreign_sqlite_file_is_refused_untouched(tmp_path, make_supervisor):
    db = tmp_path / "app.db"
    with connect(db) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.commit()
    before = db.read_bytes()
    sup = make_supervisor(start=False, status_store=f"sqlite:///{db}")
    with pytest.raises(StatusStoreError, match=rf"{db} is an SQLite database that atasker did not create"):
        sup.start()
    assert db.read_bytes() == before
    assert not sup.is_active()


@pytest.mark.parametrize("damage", ["garbage", "pages"])
def test_a_corrupt_file_is_a_clear_error_naming_it(tmp_path, damage):
    db = tmp_path / "tasks.db"
    if damage == "garbage":
        db.write_bytes(b"this is not a database\n" * 200)
    else:
        store = SQLiteStore(str(db))
        store.close()
        data = bytearray(db.read_bytes())
        data[4096:] = b"\xa5" * (len(data) - 4096)  # every page but the first
        db.write_bytes(bytes(data))
    with pytest.raises(StatusStoreError, match=rf"{db} is corrupt or not an SQLite database"):
        SQLiteStore(str(db))
    proc = cli("status", "--db", str(db))
    assert proc.returncode == 1 and str(db) in proc.stderr and "Traceback" not in proc.stderr


def test_a_locked_database_at_start_is_a_clear_error(tmp_path):
    db = tmp_path / "tasks.db"
    SQLiteStore(str(db)).close()
    with connect(db) as other:
        other.isolation_level = None
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StatusStoreError, match=rf"{db} is locked by another connection"):
            SQLiteStore(str(db), timeout=0.05)
        other.execute("ROLLBACK")
    SQLiteStore(str(db), timeout=0.05).close()


def test_a_missing_directory_is_a_clear_error(tmp_path):
    db = tmp_path / "no" / "such" / "dir" / "tasks.db"
    with pytest.raises(StatusStoreError, match=rf"cannot create status database {db}"):
        SQLiteStore(str(db))


# --------------------------------------------------------------- retention


def age(db: Path, seconds: float, where: str = "1") -> None:
    """Move rows into the past, as if they were written *seconds* ago."""
    with connect(db) as conn:
        # Named parameters with a dict: numbered ones (?1) with a tuple warn from Python 3.12 on.
        conn.execute(
            f"UPDATE tasks SET time_queued = time_queued - :s, time_started = time_started - :s, "
            f"time_finished = time_finished - :s WHERE {where}",
            {"s": seconds},
        )
        conn.execute(
            "UPDATE runs SET started = started - :s, last_write = last_write - :s, stopped = stopped - :s "
            "WHERE run_id NOT IN (SELECT run_id FROM tasks WHERE time_finished > :recent)",
            {"s": seconds, "recent": time.time() - 60},
        )
        conn.commit()


def test_keep_prunes_old_history(make_supervisor, tmp_path):
    db = tmp_path / "tasks.db"
    sup = sqlite_supervisor(make_supervisor, db)
    old = [sup.submit(int) for _ in range(5)]
    for task in old:
        task.result(WAIT)
    sup.stop()
    age(db, 10 * 86400)  # run 1: ten days ago
    sup = sqlite_supervisor(make_supervisor, db)
    recent = sup.submit(int)
    recent.result(WAIT)
    sup.stop()

    sup = sqlite_supervisor(make_supervisor, db, "keep=7d")
    store = store_of(sup)
    assert store.keep == 7 * 86400
    assert store.flush(WAIT)  # the first prune runs before the first write
    assert store.stats()["pruned"] == 5
    assert sorted(task_rows(db)) == [(2, recent.id)]
    with connect(db) as conn:
        assert [r for (r,) in conn.execute("SELECT run_id FROM runs ORDER BY run_id")] == [2, 3]
    sup.stop()


def test_cli_keep_prunes_old_history(make_supervisor, tmp_path):
    db = tmp_path / "tasks.db"
    sup = sqlite_supervisor(make_supervisor, db)
    tasks = [sup.submit(int) for _ in range(4)]
    for task in tasks:
        task.result(WAIT)
    sup.stop()
    age(db, 3 * 86400, f"task_id IN ({tasks[0].id}, {tasks[1].id})")
    data = status_json(db, "--keep", "2d", "--since", "7d")
    assert data["pruned"] == {"tasks": 2, "runs": 0}
    assert sorted(task_id for _, task_id in task_rows(db)) == [tasks[2].id, tasks[3].id]
    assert counts(data)[("thread", 100)]["completed"] == 2


# --------------------------------------------------------------------- CLI


def test_cli_table_and_json(make_supervisor, tmp_path, capsys):
    db = tmp_path / "tasks.db"
    sup = sqlite_supervisor(make_supervisor, db, pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()

    def fail():
        raise ValueError("it broke")

    for priority in (TASK_HIGH, TASK_HIGH, TASK_LOW):
        sup.submit(int, priority=priority).result(WAIT)
    sup.submit(fail, name="fail").exception(WAIT)
    running = sup.submit(gate.wait, (WAIT,), name="blocker")
    queued = [sup.submit(int) for _ in range(2)]
    store_of(sup).flush(WAIT)

    data = status_json(db, "--since", "10m")
    assert data["since"] == 600 and data["db"] == str(db)
    assert [(r["state"], r["pid"]) for r in data["runs"]] == [("running", os.getpid())]
    c = counts(data)
    assert c[("thread", TASK_HIGH)]["completed"] == 2
    assert c[("thread", TASK_LOW)]["completed"] == 1
    assert c[("thread", 100)] == {
        "queued": 2,
        "running": 1,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
        "timed_out": 0,
        "lost": 0,
    }
    times = {t["priority"]: t for t in data["times"]}
    assert times[TASK_HIGH]["tasks"] == 2 and times[100]["tasks"] == 1
    assert 0 <= times[TASK_HIGH]["wait_p50"] <= times[TASK_HIGH]["wait_p95"]
    assert 0 <= times[TASK_HIGH]["run_p50"] <= times[TASK_HIGH]["run_p95"]
    (failure,) = data["failures"]
    assert (failure["name"], failure["error_type"], failure["error_message"]) == ("fail", "ValueError", "it broke")

    assert cli_main(["status", "--db", str(db), "--since", "10m"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{db}  at ") and "HIGH (50)" in text and "LOW (200)" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("task type"))
    assert header.split() == "task type priority queued running completed failed cancelled timed out lost".split()
    normal = next(line for line in lines if line.startswith("thread") and "NORMAL (100)" in line)
    assert normal.split()[3:] == ["2", "1", "0", "1", "0", "0", "0"]
    assert any("wait p50" in line for line in lines)
    assert any("ValueError: it broke" in line for line in lines)
    assert "finished in the last 10m" in lines[0]

    gate.set()
    running.result(WAIT)
    for task in queued:
        task.result(WAIT)


def test_cli_watch_refreshes_in_place(make_supervisor, tmp_path):
    db = tmp_path / "tasks.db"
    sup = sqlite_supervisor(make_supervisor, db)
    sup.submit(int).result(WAIT)
    sup.stop()
    parser = argparse.ArgumentParser()
    add_arguments(parser)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    args = parser.parse_args(["--db", str(db), "--watch", "--interval", "0", "--count", "3"])
    assert run_status(args, out) == 0
    assert out.getvalue().count("\x1b[H\x1b[2J") == 3
    assert out.getvalue().count("task type") == 3

    out = io.StringIO()
    args = parser.parse_args(["--db", str(db), "--watch", "--json", "--interval", "0", "--count", "2"])
    assert run_status(args, out) == 0
    frames = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(frames) == 2 and counts(frames[1])[("thread", 100)]["completed"] == 1


def test_cli_errors_are_clear(tmp_path, capsys):
    assert cli_main(["status", "--db", str(tmp_path / "missing.db")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'missing.db'} does not exist" in err
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(SystemExit):
        cli_main(["status", "--db", "x.db", "--since", "soon"])
    assert "invalid duration 'soon'" in capsys.readouterr().err


def test_cli_with_no_history(tmp_path):
    db = tmp_path / "tasks.db"
    SQLiteStore(str(db)).close()
    data = status_json(db)
    assert data["counts"] == [] and data["failures"] == [] and data["times"] == []
    assert "no tasks queued, running, or finished" in render(data)


# ------------------------------------------------ other processes, kill -9

SERVICE = """
    import sys, threading
    from atasker import TaskSupervisor

    sup = TaskSupervisor(autoload=False, status_store="sqlite:///" + sys.argv[1], pool_size=1,
                         reserve_normal=0, reserve_high=0)
    sup.start()
    gate = threading.Event()

    def fail():
        raise ValueError("failure in the service")

    for task in [sup.submit(int) for _ in range(int(sys.argv[2]))]:
        task.result(10)
    sup.submit(fail).exception(10)
    running = sup.submit(gate.wait, (60,), name="blocker")
    queued = [sup.submit(int, name="waiting") for _ in range(3)]
    sup.status_store.flush(10)
    print("ready", flush=True)
    sys.stdin.readline()
    gate.set()
    sup.stop()
    print("stopped", flush=True)
"""


def test_another_process_reads_a_running_service(tmp_path):
    db = tmp_path / "tasks.db"
    proc = child(SERVICE, str(db), "5")
    try:
        assert readline(proc) == "ready"
        out = cli("status", "--db", str(db), "--json", "--since", "1h")
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert [(r["state"], r["pid"]) for r in data["runs"]] == [("running", proc.pid)]
        assert counts(data)[("thread", 100)] == {
            "queued": 3,
            "running": 1,
            "completed": 5,
            "failed": 1,
            "cancelled": 0,
            "timed_out": 0,
            "lost": 0,
        }
        assert data["failures"][0]["error_message"] == "failure in the service"
        text = cli("status", "--db", str(db))
        assert text.returncode == 0 and "failure in the service" in text.stdout
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert readline(proc) == "stopped"
        assert proc.wait(WAIT) == 0
    finally:
        proc.kill()
        proc.communicate()
    data = status_json(db)
    assert data["runs"][0]["state"] == "stopped"
    assert counts(data)[("thread", 100)]["completed"] == 9 and counts(data)[("thread", 100)]["running"] == 0


def test_kill_9_leaves_a_readable_database_with_everything_flushed(tmp_path):
    db = tmp_path / "tasks.db"
    proc = child(SERVICE, str(db), "50")
    try:
        assert readline(proc) == "ready"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(WAIT) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.communicate()
    with connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rows = by_task(db)
    outcomes = [r["outcome"] for r in rows.values()]
    assert outcomes.count("completed") == 50 and outcomes.count("failed") == 1
    assert outcomes.count(None) == 4  # the running and the queued tasks at the kill
    data = status_json(db)
    assert data["runs"][0]["state"] == "dead"
    c = counts(data)[("thread", 100)]
    assert (c["lost"], c["running"], c["queued"], c["completed"]) == (4, 0, 0, 50)
    # The file is usable again: a new run appends to it.
    store = SQLiteStore(str(db))
    assert store.run_id == 2
    store.close()


# ---------------------------------------------------------------- parsing


def test_url_parsing():
    assert parse_url("sqlite:////var/tasks.db") == ("/var/tasks.db", {})
    assert parse_url("sqlite:///tasks.db") == ("tasks.db", {})
    assert parse_url("sqlite:///~/tasks.db")[0] == os.path.expanduser("~/tasks.db")
    assert parse_url("sqlite:////t%20x.db") == ("/t x.db", {})
    assert parse_url("sqlite:////t.db?keep=7d&flush=250ms&max_pending=10&timeout=2") == (
        "/t.db",
        {"keep": 7 * 86400, "flush_interval": 0.25, "max_pending": 10, "timeout": 2.0},
    )
    assert parse_url("sqlite:////t.db?keep=forever") == ("/t.db", {"keep": None})
    assert parse_url("sqlite:////t.db?keep=") == ("/t.db", {"keep": None})
    with pytest.raises(ValueError, match="unknown option.*bogus"):
        parse_url("sqlite:///t.db?bogus=1")
    with pytest.raises(ValueError, match="invalid duration 'weekly'"):
        parse_url("sqlite:///t.db?keep=weekly")
    with pytest.raises(ValueError, match="has no path"):
        parse_url("sqlite:///")
    with pytest.raises(ValueError, match="max_pending must be"):
        SQLiteStore("unused.db", max_pending=0)


def test_a_bad_url_leaves_the_supervisor_stopped(make_supervisor, tmp_path):
    sup = make_supervisor(start=False, status_store=f"sqlite:///{tmp_path}/t.db?flush=often")
    with pytest.raises(ValueError, match="invalid duration 'often'"):
        sup.start()
    assert not sup.is_active() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("2h", 7200), ("7d", 604800), ("1w", 604800), ("250ms", 0.25), ("1.5", 1.5), (" 30s ", 30)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_describe_error():
    assert describe_error(ValueError("x")) == ("ValueError", "x")
    assert describe_error(CustomError("y")) == (f"{__name__}.CustomError", "y")
    _, message = describe_error(ValueError("z" * 5000))
    assert len(message) == 1000 and message.endswith("...")

    class Broken(Exception):
        def __str__(self):
            raise RuntimeError("no")

    assert describe_error(Broken())[1] == "<str() raised RuntimeError>"
