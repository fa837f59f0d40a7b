"""``sqlite://`` store URLs: the SQLAlchemy convention, options, the old form.

Shared by the store (:mod:`.store`) and ``atasker status`` (:mod:`.cli`)::

    sqlite:///tasks.db              ./tasks.db (relative to the current directory)
    sqlite:////var/lib/app/t.db     /var/lib/app/t.db (absolute)
    sqlite:///~/tasks.db?keep=7d    $HOME/tasks.db, keeping 7 days of history
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, unquote

from atasker.builtin.sqlite_store.db import parse_duration, parse_keep

__all__ = ["parse_url", "resolve_url"]

_OPTIONS = {"keep", "flush", "max_pending", "timeout"}
_FORMS = "sqlite:///relative/path.db (from the current directory) or sqlite:////absolute/path.db"


def parse_url(url: str) -> tuple[str, dict[str, Any]]:
    """Split ``sqlite:///PATH[?keep=7d&flush=100ms&max_pending=N&timeout=5s]``.

    The SQLAlchemy convention: after ``sqlite://`` comes an empty host, then
    ``/``, then the path, so ``sqlite:///tasks.db`` is ``tasks.db`` relative
    to the current directory and ``sqlite:////var/lib/app/tasks.db`` is
    absolute.  A path starting with ``~`` is expanded; the path is
    percent-decoded.  There is no in-memory form (``sqlite://``,
    ``sqlite:///:memory:``): the history is for other processes to read.
    A host part (``sqlite://tasks.db``) is an error showing the right form.

    :returns: the path (relative paths as written) and :class:`SQLiteStore`
        keyword arguments.
    :raises ValueError: naming the URL and the bad part.
    """
    scheme, sep, rest = url.partition("://")
    if scheme != "sqlite" or not sep:
        raise ValueError(f"not an sqlite store URL: {url!r} (expected {_FORMS})")
    raw_path, _, query = rest.partition("?")
    if raw_path in ("", "/:memory:"):
        raise ValueError(
            f"sqlite store URL {url!r}: an in-memory SQLite status store is not supported (its history could "
            "not be read by atasker status or any other process); use memory:// for live records only, or "
            "a file: sqlite:///tasks.db"
        )
    if not raw_path.startswith("/"):
        host = raw_path.partition("/")[0]
        right = "sqlite:///" + rest
        raise ValueError(
            f"sqlite store URL {url!r} has a host part ({host!r}), which SQLite URLs never have: "
            f"write {right!r} for the path {unquote(raw_path)!r} relative to the current directory "
            f"(the forms are {_FORMS})"
        )
    path = unquote(raw_path[1:])
    if not path:
        raise ValueError(f"sqlite store URL {url!r} has no path (expected {_FORMS})")
    if path.startswith("~"):
        path = os.path.expanduser(path)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")  # sqlite://///x: still /x (POSIX abspath would keep "//x")
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=True) if query else {}
    except ValueError as exc:
        raise ValueError(f"sqlite store URL {url!r}: bad query string: {exc}") from exc
    unknown = sorted(set(params) - _OPTIONS)
    if unknown:
        raise ValueError(
            f"sqlite store URL {url!r}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(_OPTIONS))}"
        )
    kwargs: dict[str, Any] = {}
    try:
        for key, values in params.items():
            value = values[-1]
            if key == "keep":
                kwargs["keep"] = None if value in ("", "forever") else parse_keep(value)
            elif key == "flush":
                kwargs["flush_interval"] = parse_duration(value)
            elif key == "timeout":
                kwargs["timeout"] = parse_duration(value)
            else:
                kwargs["max_pending"] = int(value)
    except ValueError as exc:
        raise ValueError(f"sqlite store URL {url!r}: {exc}") from exc
    return path, kwargs


def resolve_url(url: str, *, create: bool = True) -> tuple[str, dict[str, Any]]:
    """:func:`parse_url`, with the path made absolute and checked against the old reading.

    Before issue #17, ``sqlite:///var/tasks.db`` meant ``/var/tasks.db``; it
    now means ``./var/tasks.db``.  So that an old URL never silently writes
    (or reads) somewhere else, a relative path is refused when

    * its directory does not exist (with *create*; the store could not
      create the file there anyway), or
    * the file does not exist but its old, absolute reading does (a new,
      empty history would shadow the existing one).

    Both errors show the four-slash form of the absolute path.

    :param create: the caller creates a missing file (the store), rather
        than requiring it (``atasker status``).
    :returns: the absolute path and :class:`SQLiteStore` keyword arguments.
    :raises ValueError: naming the URL, the paths and the right form.
    """
    path, kwargs = parse_url(url)
    full = os.path.abspath(path)
    if os.path.isabs(path):
        return full, kwargs
    old = os.path.abspath("/" + path)
    if full == old or os.path.exists(full):
        return full, kwargs
    absolute = url.replace("sqlite:///", "sqlite:////", 1)
    meaning = (
        f"sqlite store URL {url!r} is the path {full} (relative to the current directory {os.getcwd()}, "
        f"as in SQLAlchemy; older atasker read it as {old})"
    )
    if os.path.exists(old):
        raise ValueError(
            f"{meaning}: {full} does not exist but {old} exists; to use {old} write {absolute!r}, "
            f"to start a new history at {full} move {old} away"
        )
    if create and not os.path.isdir(os.path.dirname(full)):
        raise ValueError(
            f"{meaning}: directory {os.path.dirname(full)} does not exist; for the absolute path {old} "
            f"write {absolute!r}"
        )
    return full, kwargs
