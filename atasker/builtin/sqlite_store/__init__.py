"""Built-in plugin ``atasker.builtin.sqlite_store``: status store ``sqlite://``,
a persistent task history, and the ``atasker status`` command that reads it.

* :mod:`.store` -- :class:`SQLiteStore` and its batched writer thread;
* :mod:`.rows` -- task handles to rows, and rows SQLite refuses (:func:`~.rows.storable`);
* :mod:`.filecheck` -- whether the path still names the file being written;
* :mod:`.url` -- ``sqlite://`` URLs (:func:`parse_url`, :func:`resolve_url`);
* :mod:`.db` -- the schema, opening and pruning a history file;
* :mod:`.cli` -- ``atasker status``.

Blocking this plugin removes all of it.
"""

from __future__ import annotations

from atasker.builtin.sqlite_store.store import (
    SQLiteStore,
    atasker_register_commands,
    atasker_register_status_stores,
    atasker_supervisor_stopping,
)
from atasker.builtin.sqlite_store.url import parse_url, resolve_url

__all__ = [
    "SQLiteStore",
    "atasker_register_commands",
    "atasker_register_status_stores",
    "atasker_supervisor_stopping",
    "parse_url",
    "resolve_url",
]
