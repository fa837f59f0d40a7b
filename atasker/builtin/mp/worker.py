"""The child side of process tasks, and the wire format both sides share.

Each worker process runs :func:`worker_main`: it reads one task at a time
from its own pipe, runs it, and writes one reply back::

    parent (atasker.builtin.mp)                 worker process (this module)
    ───────────────────────────                 ────────────────────────────
                                   ◀── READY    initializer ran
    dumps((task_id, f, args, kw)) ──▶           f(*args, **kw)
                                   ◀── reply    OK result | ERROR exc, tb | FAILED text, tb
    b"" (exit request) ──────────▶              return (or EOF: the parent is gone)

Pickling (:func:`dumps`) uses the standard pickler, which stores functions and
classes by reference, and falls back to cloudpickle -- which stores them by
value -- for what the standard pickler cannot store (lambdas, closures) and
for functions and classes defined in ``__main__``, which a worker may not be
able to import (an interactive session, ``python -c``, a function defined
after a forked worker started).  Plain data never pays for cloudpickle.

This module imports nothing from atasker at module level, so that the code a
worker runs stays small.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import pickle
import signal
import sys
import traceback
import types
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["HEADER", "PLAIN_TYPES", "PROTOCOL", "describe", "dumps", "frame_end", "recv_msg", "send_msg", "worker_main"]

#: Reply tags (the first item of every reply tuple).
OK = 0  # (OK, result)
ERROR = 1  # (ERROR, exception, traceback text)
FAILED = 2  # (FAILED, message, traceback text or None): could not (un)pickle
READY = 3  # (READY, pid): the worker is up and its initializer ran
INIT_FAILED = 4  # (INIT_FAILED, traceback text): the initializer raised

PROTOCOL = pickle.HIGHEST_PROTOCOL

#: Bytes of an exit request (an empty message).
EXIT = b""

#: Largest read at once; a message is framed as a 4-byte big-endian length
#: and the pickle, so that a small message costs one read() and one write().
_CHUNK = 1 << 16
#: Scalar types the plain ``pickle.dumps`` handles exactly like :func:`dumps`.
PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None), complex})


#: The wire format, both ways: each message is a 4-byte big-endian length
#: and that many bytes of pickle.  This module is the only one that writes
#: or parses it (the manager thread uses :func:`frame_end` for its
#: non-blocking reads).
HEADER = 4


def frame_end(buf: bytes | bytearray) -> int:
    """Where the message that starts *buf* ends (*buf* holds its header)."""
    return HEADER + int.from_bytes(buf[:HEADER], "big")


def send_msg(fd: int, data: bytes) -> None:
    """Write one framed message to a blocking pipe (retrying short writes)."""
    n = len(data)
    if n < _CHUNK:
        view = memoryview(n.to_bytes(HEADER, "big") + data)
    else:  # do not copy a big message just to prepend its header
        os.write(fd, n.to_bytes(HEADER, "big"))
        view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def recv_msg(fd: int, buf: bytearray) -> bytes | None:
    """Read one framed message; *buf* holds bytes read past the previous one.

    Blocks until the message is complete.  Returns ``None`` at EOF.
    """
    while len(buf) < HEADER:
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            return None
        buf += chunk
    end = frame_end(buf)
    while len(buf) < end:
        chunk = os.read(fd, max(_CHUNK, end - len(buf)))
        if not chunk:
            return None
        buf += chunk
    data = bytes(buf[HEADER:end])
    del buf[:end]
    return data


class _ByValue(Exception):
    """Raised by the pickler when something must be pickled by value."""


class _Pickler(pickle.Pickler):
    """The standard (C) pickler, refusing to store ``__main__`` objects by reference.

    ``reducer_override`` is called only for objects that are not of a basic
    type (int, str, list, dict, ...), so plain data costs nothing extra.
    """

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)) and getattr(obj, "__module__", None) == "__main__":
            raise _ByValue
        return NotImplemented


def dumps(obj: Any) -> bytes:
    """Pickle *obj* for another process: stdlib pickle, cloudpickle where needed.

    :raises Exception: whatever cloudpickle raises for an object neither can
        pickle (``TypeError``, ``pickle.PicklingError``, ...).
    """
    buf = io.BytesIO()
    try:
        _Pickler(buf, PROTOCOL).dump(obj)
        return buf.getvalue()
    except _ByValue:
        pass
    except (pickle.PicklingError, TypeError, AttributeError):
        pass  # a lambda, a closure, ...: cloudpickle stores them by value
    buf = io.BytesIO()
    _by_value_pickler()(buf, PROTOCOL).dump(obj)
    return buf.getvalue()


_BY_VALUE: Any = None


def _by_value_pickler() -> Any:
    """cloudpickle's pickler, keeping each function's file name.

    cloudpickle writes ``<dynamic-code>`` as the file of code it sends by
    value (to make payloads deterministic); a task defined in a script
    would then show ``File "<dynamic-code>"`` in its worker traceback.
    Code objects keep their ``co_filename`` here, so tracebacks name the
    script (and show its lines).  If cloudpickle's internals change, its
    plain pickler is used.
    """
    global _BY_VALUE
    if _BY_VALUE is not None:
        return _BY_VALUE
    import copyreg
    from collections import ChainMap

    import cloudpickle

    pickler: Any = cloudpickle.Pickler
    code_reduce = getattr(getattr(cloudpickle, "cloudpickle", None), "_code_reduce", None)
    table: Any = getattr(pickler, "_dispatch_table", None)
    if code_reduce is not None and isinstance(table, dict):

        def reduce_code(code: types.CodeType) -> Any:
            rebuild, args = code_reduce(code)
            args = tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)
            return rebuild, args

        class KeepFilenames(pickler):  # type: ignore[misc]  # cloudpickle has no annotations
            _dispatch_table = {**table, types.CodeType: reduce_code}
            dispatch_table = ChainMap(_dispatch_table, copyreg.dispatch_table)

        pickler = KeepFilenames
    _BY_VALUE = pickler
    return pickler


def dumps_reply(result: Any) -> bytes:
    """``dumps((OK, result))``, with a shortcut for scalars."""
    if type(result) in PLAIN_TYPES:
        return pickle.dumps((OK, result), PROTOCOL)
    return dumps((OK, result))


def describe(obj: Any) -> str:
    """A short description of an object for error messages: ``a Lock object``."""
    kind = type(obj)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return f"function {getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"{article} {name} object"


def format_exc(exc: BaseException) -> str:
    """The traceback of *exc* as text (with its chained exceptions)."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


_accepts_cache: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def accepts_task_id(func: Callable[..., Any]) -> bool:
    """Whether *func* takes a ``_task_id`` keyword (by name or through ``**kwargs``)."""
    try:
        return _accepts_cache[func]
    except (KeyError, TypeError):
        pass
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        accepts = False
    else:
        accepts = any(
            p.kind is p.VAR_KEYWORD or (p.name == "_task_id" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
            for p in params
        )
    try:
        _accepts_cache[func] = accepts
    except TypeError:  # not weak-referenceable: not cached
        pass
    return accepts


def _after_fork() -> None:
    """In a forked worker: a fresh cloudpickle class-tracker lock.

    The parent holds that lock across the fork (so that the tracker is
    consistent), and the copy here is therefore locked, by a thread that does
    not exist in this process.
    """
    cp = sys.modules.get("cloudpickle.cloudpickle")
    if cp is not None and hasattr(cp, "_DYNAMIC_CLASS_TRACKER_LOCK"):
        import threading

        cp._DYNAMIC_CLASS_TRACKER_LOCK = threading.Lock()  # type: ignore[attr-defined]  # cloudpickle internals


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the thread that started it exits.

    That thread is the parent's manager thread (fork, spawn) or the
    forkserver (which exits with the parent), and it outlives its workers in
    an orderly shutdown: so this fires only when the parent itself is gone,
    killed or crashed.  An idle worker would notice that anyway (EOF on its
    pipe); a busy or stuck one would not, and would be left behind.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        return
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)
    # A forkserver child holds the server's "alive" pipe, which keeps the
    # server -- our parent for prctl -- running as long as we do: close it,
    # so that the server exits with the process that owns the pool and takes
    # us along.  (A task that uses forkserver itself starts its own server.)
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=True) == "forkserver":
        server = getattr(sys.modules.get("multiprocessing.forkserver"), "_forkserver", None)
        fd = getattr(server, "_forkserver_alive_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
            server._forkserver_alive_fd = None  # type: ignore[union-attr]  # not None: it had the fd


def _error_reply(exc: BaseException) -> bytes:
    """Reply for a task that raised: the exception itself if it survives pickling."""
    tb = format_exc(exc)
    try:
        data = dumps((ERROR, exc, tb))
        pickle.loads(data)  # an exception whose __init__ needs other arguments fails here
        return data
    except Exception as why:
        try:
            text = str(exc)
        except Exception:
            text = "<str() failed>"
        kind = type(exc)
        message = (
            f"the task raised {kind.__module__}.{kind.__qualname__}: {text}; the exception could not be "
            f"pickled to send it to the parent process: {type(why).__name__}: {why}"
        )
        return dumps((FAILED, message, tb))


def _run(data: bytes) -> bytes:
    """Run one task message; return the reply.  Never raises."""
    try:
        task_id, func, args, kwargs = pickle.loads(data)
    except BaseException as exc:
        return dumps(
            (
                FAILED,
                f"the task could not be unpickled in the worker process: {type(exc).__name__}: {exc}",
                format_exc(exc),
            )
        )
    try:
        if task_id is not None and "_task_id" not in kwargs and accepts_task_id(func):
            kwargs["_task_id"] = task_id
        result = func(*args, **kwargs)
        if isinstance(result, types.CoroutineType):  # an async def function: run it here
            import asyncio

            result = asyncio.run(result)
    except BaseException as exc:
        return _error_reply(exc)
    try:
        return dumps_reply(result)
    except BaseException as exc:
        return dumps(
            (
                FAILED,
                f"the result of the task ({describe(result)}) could not be pickled: {type(exc).__name__}: {exc}",
                None,
            )
        )


def worker_main(
    tasks: Any,
    replies: Any,
    init: bytes | None = None,
    close_fds: tuple[int, ...] = (),
) -> None:
    """Body of a worker process: run tasks until an exit request or EOF.

    :param tasks: read end of the task pipe (a ``multiprocessing``
        connection; only its descriptor is used).
    :param replies: write end of the reply pipe (the same).
    :param init: pickled ``(initializer, initargs)``, or ``None``.
    :param close_fds: descriptors inherited through ``fork`` that belong to
        the parent's other workers; closed first, so that a sibling never
        keeps another worker's pipe open after the parent is gone.
    """
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    if close_fds:
        _after_fork()
    # Ctrl-C in a terminal signals the whole process group: the parent
    # decides what happens to running tasks, not each worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    rfd, wfd = tasks.fileno(), replies.fileno()
    buf = bytearray()

    def send(data: bytes) -> None:
        send_msg(wfd, data)

    try:
        if init is not None:
            try:
                initializer, initargs = pickle.loads(init)
                initializer(*initargs)
            except BaseException as exc:
                send(dumps((INIT_FAILED, format_exc(exc))))
                raise SystemExit(1) from None
        send(dumps((READY, os.getpid())))
        while True:
            try:
                data = recv_msg(rfd, buf)
            except OSError:
                return
            if not data:
                return  # exit request, or EOF: the parent is gone
            reply = _run(data)
            del data
            try:
                send(reply)
            except OSError:
                return  # the parent is gone
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except Exception:
                pass
