"""Whether a status database's path still names the file a store writes.

SQLite writes the file it has open: after ``rm tasks.db``, ``mv other.db
tasks.db`` or ``> tasks.db`` it goes on committing, and the history is
silently not where anyone will look for it.  The store's writer checks
after each write transaction and when closing::

    open:  stat(path) -> (st_dev, st_ino); header seen so far
    check: stat(path) missing       -> "was removed"
           another (dev, inode)      -> "was replaced by another file"
           header lost / not SQLite  -> "was overwritten"

Costs one ``stat`` and, once the file has a header, one 100-byte read per
check.  Another connection checkpointing or vacuuming the file changes
neither its inode nor its header.
"""

from __future__ import annotations

import os

from atasker.builtin.sqlite_store.db import APPLICATION_ID, StatusStoreError

__all__ = ["FileCheck"]

_MAGIC = b"SQLite format 3\x00"


class FileCheck:
    """Remembers the file at *path* (call right after opening it); :meth:`check` it later."""

    def __init__(self, path: str) -> None:
        self.path = path
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)
        # What the header showed so far: 1 an SQLite header, 2 also atasker's
        # application_id (the first checkpoint copies it from the WAL).
        self._seen = 0
        self._header(st.st_size)

    def check(self) -> None:
        """:raises StatusStoreError: the path no longer names the file, or it was overwritten."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            what = "was removed"
        else:
            if (st.st_dev, st.st_ino) != self._identity:
                what = "was replaced by another file"
            else:
                what = self._header(st.st_size)
                if not what:
                    return
        raise StatusStoreError(
            f"status database {self.path} {what} while the store was writing it: the history this run "
            "wrote is not in that file, and no more is written"
        )

    def _header(self, size: int) -> str:
        """``""`` if the file still starts as an atasker status database, else what happened."""
        if size < 100:  # before the first checkpoint the header may not be written yet
            return "was overwritten (it is empty now)" if self._seen else ""
        try:
            with open(self.path, "rb") as fh:
                header = fh.read(100)
        except OSError as exc:
            return f"cannot be read any more ({exc.strerror or exc})"
        if header[:16] != _MAGIC:
            return "was overwritten (it is no longer an SQLite database)"
        ours = int.from_bytes(header[68:72], "big") == APPLICATION_ID  # application_id: offset 68
        if self._seen == 2 and not ours:
            return "was overwritten (it is no longer an atasker status database)"
        self._seen = 2 if ours else 1
        return ""
