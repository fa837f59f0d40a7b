"""Signals: Ctrl-C belongs to the main thread; stop() may run in a handler."""

from __future__ import annotations

import functools
import signal
import sys
from types import CodeType
from typing import Any

__all__ = ["in_signal_handler", "signals_to_main_thread", "unblock_signals"]


def signals_to_main_thread() -> None:
    """Block SIGINT in the calling thread (one of atasker's own).

    The kernel hands a process-directed SIGINT (Ctrl-C) to any thread that
    does not block it; caught by one of ours, Python only sets a flag, and a
    main thread asleep in ``time.sleep()`` or a wait would not see Ctrl-C
    until it wakes.  atasker's own service threads (the timer, the process
    pool's manager, store and trace writers, the live view) call this
    first.  Threads that run tasks -- thread-pool workers and aloops --
    unblock it instead: a task's child processes inherit its thread's
    mask, and must still get Ctrl-C.
    """
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def unblock_signals() -> None:
    """Undo :func:`signals_to_main_thread` in this thread (or a child process
    that inherited the mask), so that its child processes get Ctrl-C."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _code(handler: Any) -> CodeType | None:
    while isinstance(handler, functools.partial):
        handler = handler.func
    handler = getattr(handler, "__func__", handler)  # a bound method
    code = getattr(handler, "__code__", None)
    if code is None and callable(handler) and not isinstance(handler, type):
        call = vars(type(handler)).get("__call__")  # an object with a __call__ method
        code = getattr(call, "__code__", None)
    return code if isinstance(code, CodeType) else None


def in_signal_handler() -> bool:
    """Whether the calling code runs inside a Python signal handler.

    A handler runs on the main thread between two bytecodes of whatever it
    interrupted -- possibly inside a ``with lock:`` that the handler would
    then wait for forever.  Python calls it as ``handler(signum, frame)``
    with *frame* the interrupted frame, which is also the handler's caller:
    a frame on the stack that runs an installed handler's code and holds
    its own caller as an argument is a signal delivery, not a plain call of
    that function.  Takes no lock.
    """
    codes = set()
    for signum in signal.valid_signals():
        try:
            code = _code(signal.getsignal(signum))
        except (OSError, ValueError):  # pragma: no cover - a signal Python cannot query
            continue
        if code is not None:
            codes.add(code)
    if not codes:
        return False
    frame = sys._getframe(1)
    while frame is not None:
        caller = frame.f_back
        if frame.f_code in codes and caller is not None:
            for value in frame.f_locals.values():
                if value is caller or (type(value) is tuple and any(v is caller for v in value)):
                    return True
        frame = caller  # type: ignore[assignment]
    return False
