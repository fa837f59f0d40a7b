"""Signals: Ctrl-C belongs to the main thread."""

from __future__ import annotations

import signal

__all__ = ["signals_to_main_thread", "unblock_signals"]


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
