"""The status store contract on the built-in stores: ``memory://`` and ``sqlite://``."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from atasker.testing import StatusStoreContract


class TestMemoryStore(StatusStoreContract):
    """The default store: live records only, no history."""

    def store_url(self, tmp_path: Path) -> str:
        return "memory://"


class TestSQLiteStore(StatusStoreContract):
    """Live records in memory, history in an SQLite file in the test's directory."""

    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'tasks.db'}"

    def history(self, url: str, tmp_path: Path) -> dict[int, str]:
        """Final outcomes of the last run in the file (read with plain sqlite3)."""
        with contextlib.closing(sqlite3.connect(tmp_path / "tasks.db")) as conn:
            (run,) = conn.execute("SELECT MAX(run_id) FROM tasks").fetchone()
            rows = conn.execute("SELECT task_id, outcome FROM tasks WHERE run_id = ?", (run,)).fetchall()
        return dict(rows)
