"""Issue #17: ``sqlite://`` URLs follow SQLAlchemy, ``atasker status`` takes
the application's URL, ``keep=`` needs a unit.

* ``sqlite:///relative/path.db`` -- relative to the current directory;
* ``sqlite:////absolute/path.db`` -- absolute;
* ``sqlite://`` and ``sqlite:///:memory:`` -- an error (no in-memory history);
* anything with an authority (``sqlite://tasks.db``) -- an error showing the
  right form.

No test sleeps: everything here is synchronous, or waits on a task handle
bounded by ``WAIT``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
from pathlib import Path

import pytest

from atasker.builtin.sqlite_store import db as sqlite_db
from atasker.builtin.sqlite_store.db import StatusStoreError, parse_keep
from atasker.builtin.sqlite_store.store import SQLiteStore, parse_url
from atasker.tools.cli import main as cli_main
from tests.conftest import WAIT


def files(directory: Path) -> list[str]:
    """Every file under *directory*, relative, sorted."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def run_one_task(make_supervisor, url: str) -> None:
    sup = make_supervisor(status_store=url)
    sup.submit(int, name="one").result(WAIT)
    sup.stop()


def task_names(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [name for (name,) in conn.execute("SELECT name FROM tasks")]
    finally:
        conn.close()


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory, apart from *tmp_path*'s other contents."""
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    return here


# ------------------------------------------------------------- URL forms


def test_four_slashes_is_an_absolute_path(make_supervisor, tmp_path, cwd):
    db = tmp_path / "abs" / "tasks.db"
    db.parent.mkdir()
    url = f"sqlite:///{db}"  # sqlite:////tmp/.../abs/tasks.db
    assert url.startswith("sqlite:////")
    assert parse_url(url) == (str(db), {})
    run_one_task(make_supervisor, url)
    assert task_names(db) == ["one"]
    assert files(cwd) == []


def test_three_slashes_is_relative_to_the_current_directory(make_supervisor, cwd):
    (cwd / "sub").mkdir()
    assert parse_url("sqlite:///rel.db") == ("rel.db", {})
    assert parse_url("sqlite:///sub/rel.db?keep=7d") == ("sub/rel.db", {"keep": 7 * 86400.0})
    run_one_task(make_supervisor, "sqlite:///rel.db")
    run_one_task(make_supervisor, "sqlite:///sub/rel.db")
    assert task_names(cwd / "rel.db") == ["one"]
    assert task_names(cwd / "sub" / "rel.db") == ["one"]


def test_home_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_url("sqlite:///~/tasks.db")[0] == str(tmp_path / "tasks.db")


def test_more_leading_slashes_still_name_the_absolute_path(make_supervisor, tmp_path, cwd):
    # A regression guard: extra slashes collapse, as in a POSIX path.
    db = tmp_path / "tasks.db"
    run_one_task(make_supervisor, f"sqlite:////{db}")
    assert task_names(db) == ["one"]


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///:memory:?keep=1d"])
def test_an_in_memory_store_is_a_clear_error(url, make_supervisor, cwd):
    with pytest.raises(ValueError, match=r"in-memory .* not supported.*memory://.*sqlite:///tasks\.db"):
        parse_url(url)
    sup = make_supervisor(start=False, status_store=url)
    with pytest.raises(ValueError, match="in-memory"):
        sup.start()
    assert not sup.is_active() and files(cwd) == []


@pytest.mark.parametrize(
    ("url", "right"),
    [
        ("sqlite://tasks.db", "sqlite:///tasks.db"),
        ("sqlite://data/tasks.db?keep=7d", "sqlite:///data/tasks.db?keep=7d"),
        ("sqlite://~/tasks.db", "sqlite:///~/tasks.db"),
        ("sqlite://host/x.db", "sqlite:///host/x.db"),
    ],
)
def test_an_authority_is_an_error_showing_the_right_form(url, right, make_supervisor, cwd):
    with pytest.raises(ValueError, match="sqlite:////absolute/path") as info:
        parse_url(url)
    assert right in str(info.value)
    sup = make_supervisor(start=False, status_store=url)
    with pytest.raises(ValueError):
        sup.start()
    assert files(cwd) == []


def test_an_empty_path_is_an_error():
    with pytest.raises(ValueError, match="has no path"):
        parse_url("sqlite:///")
    with pytest.raises(ValueError, match="has no path"):
        parse_url("sqlite:///?keep=1d")


# ----------------------------------------- the old three-slash absolute form


def test_the_old_absolute_form_with_a_missing_relative_directory_is_an_error(make_supervisor, tmp_path, cwd):
    # Before: sqlite:///tmp/.../tasks.db was the absolute path.  Now it is
    # relative; cwd/tmp/... does not exist, and the error shows the new form.
    db = tmp_path / "tasks.db"
    old = f"sqlite://{db}"
    sup = make_supervisor(start=False, status_store=old)
    with pytest.raises(ValueError, match="relative to the current directory") as info:
        sup.start()
    assert f"sqlite:///{db}" in str(info.value)  # four slashes
    assert not sup.is_active()
    assert files(tmp_path) == []


def test_the_old_absolute_form_never_silently_starts_a_second_history(make_supervisor, tmp_path, cwd):
    # The file the old form wrote exists; the relative reading would create a
    # new, empty history next to the current directory instead: refused.
    db = tmp_path / "tasks.db"
    run_one_task(make_supervisor, f"sqlite:///{db}")
    (cwd / str(db.parent).lstrip("/")).mkdir(parents=True)
    before = files(cwd)
    sup = make_supervisor(start=False, status_store=f"sqlite://{db}")
    with pytest.raises(ValueError, match=rf"{db} exists") as info:
        sup.start()
    assert f"sqlite:///{db}" in str(info.value)
    assert files(cwd) == before


# ----------------------------------------------------- no 0-byte file left


def test_a_failing_open_leaves_no_empty_file(tmp_path, monkeypatch):
    db = tmp_path / "tasks.db"

    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite_db.sqlite3, "connect", refuse)
    with pytest.raises(StatusStoreError, match="cannot open status database"):
        SQLiteStore(str(db))
    assert files(tmp_path) == []


def test_a_failing_open_keeps_a_file_it_did_not_create(tmp_path, monkeypatch):
    db = tmp_path / "tasks.db"
    db.write_bytes(b"")

    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite_db.sqlite3, "connect", refuse)
    with pytest.raises(StatusStoreError):
        SQLiteStore(str(db))
    assert db.exists()


# ------------------------------------------------------------------ keep=


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 7 * 86400), ("12h", 12 * 3600), ("30m", 1800), ("45s", 45), ("1w", 604800), ("1.5d", 1.5 * 86400)],
)
def test_keep_takes_a_unit(text, seconds):
    assert parse_keep(text) == seconds
    assert parse_url(f"sqlite:///t.db?keep={text}") == ("t.db", {"keep": seconds})


@pytest.mark.parametrize("text", ["7", "7.5", "0"])
def test_keep_as_a_bare_number_is_an_error_naming_the_forms(text, make_supervisor, cwd):
    with pytest.raises(ValueError, match=r"keep=.*needs a unit.*7d.*12h.*30m.*45s"):
        parse_url(f"sqlite:///t.db?keep={text}")
    sup = make_supervisor(start=False, status_store=f"sqlite:///t.db?keep={text}")
    with pytest.raises(ValueError, match="needs a unit"):
        sup.start()
    assert files(cwd) == []


def test_status_keep_as_a_bare_number_is_an_error(tmp_path, capsys):
    db = tmp_path / "tasks.db"
    SQLiteStore(str(db)).close()
    with pytest.raises(SystemExit):
        cli_main(["status", "--db", str(db), "--keep", "7"])
    assert "needs a unit" in capsys.readouterr().err
    assert cli_main(["status", "--db", str(db), "--keep", "7d", "--json"]) == 0


# ------------------------------------------------------- atasker status


def status(*args: str) -> tuple[int, dict | None, str]:
    """``atasker status --json`` in this process: (exit status, data, stderr)."""
    out = io.StringIO()
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(["status", "--json", *args])
    return code, (json.loads(out.getvalue()) if code == 0 else None), err.getvalue()


def test_status_takes_the_applications_url(make_supervisor, tmp_path, cwd):
    abs_db = tmp_path / "abs.db"
    run_one_task(make_supervisor, f"sqlite:///{abs_db}?keep=7d")
    run_one_task(make_supervisor, "sqlite:///rel.db")
    for db_arg, path in [
        (f"sqlite:///{abs_db}?keep=7d", abs_db),
        (f"sqlite:///{abs_db}", abs_db),
        (str(abs_db), abs_db),
        ("sqlite:///rel.db", cwd / "rel.db"),
        ("rel.db", cwd / "rel.db"),
    ]:
        code, data, err = status("--db", db_arg)
        assert code == 0, (db_arg, err)
        assert data is not None and data["db"] == str(path)
        assert sum(c["completed"] for c in data["counts"]) == 1


def test_status_reads_atasker_status_store(make_supervisor, tmp_path, cwd, monkeypatch):
    db = tmp_path / "tasks.db"
    url = f"sqlite:///{db}?keep=7d"
    run_one_task(make_supervisor, url)
    monkeypatch.setenv("ATASKER_STATUS_STORE", url)
    code, data, err = status()
    assert code == 0, err
    assert data is not None and data["db"] == str(db)
    # --db wins over the environment.
    other = tmp_path / "other.db"
    SQLiteStore(str(other)).close()
    code, data, err = status("--db", str(other))
    assert code == 0 and data is not None and data["db"] == str(other)


def test_status_without_a_database_is_a_clear_error(cwd):
    code, _, err = status()
    assert code == 2
    assert "--db" in err and "ATASKER_STATUS_STORE" in err and "Traceback" not in err
    assert files(cwd) == []


@pytest.mark.parametrize("value", ["memory://", "tasks.db", "redis://localhost/0"])
def test_status_with_a_non_sqlite_environment_url_is_a_clear_error(value, monkeypatch, cwd):
    monkeypatch.setenv("ATASKER_STATUS_STORE", value)
    code, _, err = status()
    assert code == 2
    assert "ATASKER_STATUS_STORE" in err and repr(value) in err and "sqlite://" in err
    assert files(cwd) == []


@pytest.mark.parametrize(
    ("db_arg", "message"),
    [
        ("sqlite://tasks.db", "sqlite:///tasks.db"),
        ("sqlite://", "in-memory"),
        ("redis://localhost/0", "not an sqlite"),
        ("sqlite:///t.db?keep=7", "needs a unit"),
    ],
)
def test_status_with_a_bad_url_is_a_clear_error(db_arg, message, cwd):
    code, _, err = status("--db", db_arg)
    assert code == 2 and message in err and "Traceback" not in err
    assert files(cwd) == []


def test_status_with_the_old_absolute_form_shows_the_new_one(make_supervisor, tmp_path, cwd):
    db = tmp_path / "tasks.db"
    run_one_task(make_supervisor, f"sqlite:///{db}")
    code, _, err = status("--db", f"sqlite://{db}")
    assert code == 2 and f"sqlite:///{db}" in err
    assert os.listdir(cwd) == []
