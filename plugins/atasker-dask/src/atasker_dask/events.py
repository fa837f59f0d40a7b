"""The executor's one reporting thread: task outcomes, jobs and timers.

A Dask client does its work on an event loop, which must never wait for
atasker's ``task_done`` (it calls user callbacks and hooks, which may be
slow).  So the loop only gathers results, in batches, and hands them over;
this thread reports them and runs posted jobs (cancellations, pool
refreshes, and timeouts: the supervisor's timer posts them here when they
are due, so that every outcome is reported on this one thread).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from atasker import AtaskerError, signals_to_main_thread

__all__ = ["EventThread"]

logger = logging.getLogger("atasker.dask")


class EventThread:
    """Runs ``on_batch(items)``, then posted jobs (due timers among them).

    Sleeps on a condition until there is work; never polls.
    Started on first use; :meth:`stop` ends it after the work already posted.
    """

    def __init__(self, name: str, on_batch: Callable[[list[Any]], None], supervisor: Any = None) -> None:
        self._name = name
        self._supervisor = supervisor
        self._on_batch = on_batch
        self._cond = threading.Condition(threading.Lock())
        self._done: list[Any] = []
        self._jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._thread: threading.Thread | None = None
        self._stopped = False

    def _ensure_thread(self) -> None:
        # Called with _cond held.
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def add_batch(self, items: list[Any]) -> None:
        """Outcomes for ``on_batch`` (called from a Dask client's event loop: never blocks long)."""
        with self._cond:
            if self._stopped:
                return
            self._done.extend(items)
            self._ensure_thread()
            self._cond.notify()

    def post(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Run ``fn(*args)`` on this thread soon; ``False`` once stopped."""
        with self._cond:
            if self._stopped:
                return False
            self._jobs.append((fn, args))
            self._ensure_thread()
            self._cond.notify()
            return True

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on this thread at ``time.monotonic()`` *when*.

        The supervisor's timer keeps the deadline and posts the call here;
        once the supervisor or this thread stopped, the call is dropped.
        """
        with self._cond:
            if self._stopped:
                return
        try:
            self._supervisor.timer.call_at(when, self.post, fn, *args)
        except (AtaskerError, RuntimeError):
            pass  # the supervisor stopped: its tasks' deadlines no longer matter

    def is_current(self) -> bool:
        """Whether the caller runs on this thread."""
        return self._thread is threading.current_thread()

    def _run(self) -> None:
        signals_to_main_thread()  # Ctrl-C goes to the main thread
        # Task callbacks run here, and every outcome passes through here: the
        # supervisor sees this thread report other tasks' outcomes, so a
        # stop(wait=True) from a callback fails rather than waits for itself.
        cond = self._cond
        while True:
            with cond:
                while not (self._done or self._jobs):
                    if self._stopped:
                        return
                    cond.wait()
                done, self._done = self._done, []
                jobs, self._jobs = self._jobs, []
            # Outcomes first: one that arrives with its task's timeout wins.
            if done:
                self._call(self._on_batch, (done,))
            for fn, args in jobs:
                self._call(fn, args)

    @staticmethod
    def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except BaseException:  # one bad job must not end the thread: every dask outcome passes here
            logger.exception("atasker-dask: %r failed", fn)

    def stop(self, wait: bool = True) -> None:
        """Stop after the futures and jobs already posted (later timers are dropped)."""
        with self._cond:
            self._stopped = True
            thread = self._thread
            self._cond.notify()
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()
