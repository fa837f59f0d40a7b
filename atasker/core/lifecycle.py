"""Lifecycle: a supervisor's start and stop (:class:`Lifecycle`), and the
process's -- interpreter exit and ``fork`` -- in one place.

* At exit after Ctrl-C (an uncaught ``KeyboardInterrupt``), queued and
  delayed tasks are cancelled, one line on stderr says how many running
  tasks are waited for, and a second Ctrl-C kills the worker processes and
  exits at once with status 130.  A ``stop()`` called while the
  ``KeyboardInterrupt`` is handled (``try: ... finally: stop()``) does the same.
* At exit, every started supervisor is stopped (``stop(wait=True)``) from
  ``threading._register_atexit`` -- the hook ``concurrent.futures`` uses --
  which runs before non-daemon threads are joined, so queued work still
  finishes and a script exits cleanly without an explicit ``stop()``.
  Then the callbacks plugins registered with :func:`at_exit` run, newest
  first (a process pool kills workers whose task outlived a timed stop).
* In a forked child, the copies of the parent's supervisors own none of its
  threads, workers or task records: each forgets them and starts afresh on
  its first use in the child (so the child's thread tasks run), stopping
  them at the child's exit cannot act on the parent's resources, and the
  callbacks plugins registered with :func:`after_fork_in_child` run.
  Handles of tasks the parent had in flight do not resolve in the child.
"""

from __future__ import annotations

import _thread
import logging
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from atasker.core.dispatch import Dispatcher
from atasker.core.signals import in_signal_handler
from atasker.core.task import SupervisorAPI, thread_state
from atasker.core.timer import Timer, wait_timeout
from atasker.errors import SupervisorStoppedError

__all__ = [
    "OPTION_PROVIDERS",
    "Lifecycle",
    "aborting",
    "after_fork_in_child",
    "at_exit",
    "cancel_at_exit",
    "stop_on_interrupt",
    "watch_supervisor",
]

#: Which built-in plugin handles each ``start()`` option, named in the error
#: when it is blocked (any plugin may handle them).
OPTION_PROVIDERS = {"trace": "atasker.builtin.trace"}

logger = logging.getLogger("atasker")

_supervisors: weakref.WeakSet[SupervisorAPI] = weakref.WeakSet()
_exit_callbacks: list[Callable[[], object]] = []
_fork_callbacks: list[Callable[[], object]] = []
_lock = threading.Lock()
_registered = False
_aborting = False
_interrupt_stop = False  # stop_on_interrupt() is stopping


def check_wait(wait: object) -> None:
    """Raise unless *wait* is what ``stop(wait=...)`` accepts.

    ``True`` (or ``inf``): wait without a limit; ``False``: do not wait; a
    number of seconds >= 0 (``0``: cancel what is queued at once).

    :raises TypeError: neither a bool nor a number (``None`` too: say
        ``True`` to wait without a limit).
    :raises ValueError: a negative number or NaN.
    """
    if isinstance(wait, bool):
        return
    if not isinstance(wait, (int, float)):
        raise TypeError(
            f"stop(wait=...) takes True (wait for every task), False (do not wait) or seconds >= 0, got {wait!r}"
        )
    if math.isnan(wait) or wait < 0:
        raise ValueError(f"stop(wait=...) takes seconds >= 0 (or True / False), got {wait!r}")


def watch_supervisor(supervisor: SupervisorAPI) -> None:
    """Stop *supervisor* at interpreter exit (called by its first ``start()``)."""
    _supervisors.add(supervisor)
    _register()


def at_exit(callback: Callable[[], object]) -> None:
    """Run ``callback()`` at interpreter exit, after the supervisors stopped.

    For plugins that own processes or files beyond a supervisor's ``stop()``.
    Callbacks run newest first; one that raises is logged.
    """
    with _lock:
        _exit_callbacks.append(callback)
    _register()


def cancel_at_exit(callback: Callable[[], object]) -> None:
    """Forget a callback given to :func:`at_exit` (no error if unknown)."""
    with _lock:
        if callback in _exit_callbacks:
            _exit_callbacks.remove(callback)


def after_fork_in_child(callback: Callable[[], object]) -> None:
    """Run ``callback()`` in the child after every ``os.fork()``.

    For plugins that must disown what the parent's copies of their objects
    refer to (threads, pipes, worker processes).
    """
    with _lock:
        _fork_callbacks.append(callback)


def _register() -> None:
    global _registered
    # concurrent.futures registers its own exit hook when its thread module
    # is first imported, and hooks run newest first: imported before ours is
    # registered, it shuts its pools (which asyncio, Dask's scheduler and
    # tasks use) only after the supervisors stopped.
    import concurrent.futures.thread  # noqa: F401

    with _lock:
        if _registered:
            return
        try:
            threading._register_atexit(_run_at_exit)  # type: ignore[attr-defined]  # what concurrent.futures uses
        except RuntimeError:  # the interpreter is already shutting down
            return
        _registered = True


def _run_at_exit() -> None:
    supervisors = list(_supervisors)
    # The program ends because of Ctrl-C: queued work is not wanted any more,
    # and a second Ctrl-C must end it at once.
    if isinstance(getattr(sys, "last_value", None), KeyboardInterrupt):
        stop_on_interrupt(supervisors)
    else:
        for supervisor in supervisors:
            try:
                supervisor.stop(wait=True)
            except Exception:
                logger.exception("stopping %r at exit failed", supervisor)
    _run_exit_callbacks()


def stop_on_interrupt(supervisors: list[SupervisorAPI]) -> bool:
    """Stop *supervisors* the way the first Ctrl-C asks for.

    Queued and delayed tasks are cancelled, one line on stderr says how many
    running tasks are waited for, and a second Ctrl-C while they run runs the
    exit callbacks (worker processes are terminated) and ends the process at
    once with status 130.  ``stop(wait=...)`` called while a
    ``KeyboardInterrupt`` is being handled (in an ``except`` or ``finally``
    block: the usual ``try: ... finally: supervisor.stop()``) comes here too.

    :returns: whether every task ended.
    """
    global _interrupt_stop, _aborting
    _interrupt_stop = True
    try:
        _announce_interrupt(supervisors)
        all_done = True
        for supervisor in supervisors:
            try:
                all_done = supervisor.stop(wait=True, cancel_tasks=True) and all_done
            except Exception:
                logger.exception("stopping %r after Ctrl-C failed", supervisor)
        return all_done
    except KeyboardInterrupt:
        _aborting = True
        print("atasker: aborted: worker processes terminated, running tasks abandoned", file=sys.stderr)
        _run_exit_callbacks()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)  # 128 + SIGINT, as a shell reports it
    finally:
        _interrupt_stop = False


def _handling_interrupt() -> bool:
    # A Ctrl-C being handled by the calling code, on the thread Python
    # delivers it to; not while stop_on_interrupt() itself stops.
    return (
        not _interrupt_stop
        and isinstance(sys.exc_info()[1], KeyboardInterrupt)
        and threading.current_thread() is threading.main_thread()
    )


def aborting() -> bool:
    """Whether the program is exiting on a second Ctrl-C: exit callbacks must not wait."""
    return _aborting


def _announce_interrupt(supervisors: list[SupervisorAPI]) -> None:
    running = queued = 0
    for supervisor in supervisors:
        if supervisor.is_active():
            for task in supervisor.get_tasks():
                if task.time_started is None:
                    queued += 1
                else:
                    running += 1
    if running or queued:
        print(
            f"atasker: interrupted: cancelling {queued} queued task(s), waiting for {running} running "
            "task(s) to finish; press Ctrl-C again to abort them",
            file=sys.stderr,
            flush=True,
        )


def _run_exit_callbacks() -> None:
    with _lock:
        callbacks = list(reversed(_exit_callbacks))
    for callback in callbacks:
        try:
            callback()
        except Exception:
            logger.exception("atasker at-exit callback %r failed", callback)


def _in_child() -> None:
    supervisors = list(_supervisors)
    _supervisors.clear()
    for supervisor in supervisors:
        supervisor._lifecycle.forget_after_fork()  # type: ignore[attr-defined]  # a TaskSupervisor: see watch_supervisor
    for callback in list(_fork_callbacks):
        try:
            callback()
        except Exception:
            logger.exception("atasker after-fork callback %r failed", callback)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_child)


class Lifecycle:
    """Start and stop of one supervisor: what ``start()`` resolves and opens,
    what ``stop()`` drains, shuts down and closes.

    ::

        start(): policy + store resolved ─▶ timer ─▶ atasker_supervisor_starting
                 ─▶ active ─▶ atasker_supervisor_started
        stop():  atasker_supervisor_stopping ─▶ drain (or cancel) ─▶ executors
                 shut down ─▶ atasker_supervisor_stopped ─▶ timer stops ─▶
                 block() returns ─▶ store closed

    :param supervisor: the supervisor it runs (hooks receive it).
    :param dispatch: its dispatcher (state flags, counts, store, timer).
    """

    def __init__(self, supervisor: SupervisorAPI, dispatch: Dispatcher) -> None:
        self.supervisor = supervisor
        self.dispatch = dispatch
        #: Serialises start/stop and lazy executor creation (may be slow).
        self.config_lock = threading.RLock()
        self.stopped = threading.Event()
        self.ever_started = False
        #: What the constructor or ``start()`` asked for (``None``: environment, then default).
        self.queue_policy: str | None = None
        self.status_store: str | None = None
        #: The queue policy of this run, once started.
        self.policy_name = "priority"
        #: The thread running the current stop; set once that stop is over,
        #: with its result (what a second ``stop()`` meanwhile returns).
        self.stopper: int | None = None
        self.stop_done = threading.Event()
        self.stop_result = False

    def forget_after_fork(self) -> None:
        """In a forked child: start afresh on first use (see :meth:`Dispatcher.forget_after_fork`)."""
        self.config_lock = threading.RLock()
        self.supervisor._config_lock = self.config_lock  # type: ignore[attr-defined]  # the façade shares it
        self.stopped = threading.Event()
        self.stop_done = threading.Event()
        self.ever_started = False
        self.dispatch.forget_after_fork()

    # ---------------------------------------------------------------- start

    def start(self, queue_policy: str | None, status_store: str | None, options: dict[str, Any]) -> None:
        """See :meth:`TaskSupervisor.start`."""
        sup, dispatch = self.supervisor, self.dispatch
        options = {k: v for k, v in options.items() if v is not None}
        with self.config_lock:
            sup.plugin_manager  # noqa: B018  (built now: plugins configure before anything starts)
            if dispatch.active:
                if options:
                    self.offer_options(options)
                return
            if queue_policy is not None:
                self.queue_policy = queue_policy
            if status_store is not None:
                self.status_store = status_store
            policy_name = self.queue_policy or os.environ.get("ATASKER_QUEUE_POLICY") or "priority"
            store_url = self.status_store or os.environ.get("ATASKER_STATUS_STORE") or "memory://"
            # Resolve both before changing any state, so a bad name leaves
            # the supervisor stopped and usable.
            sup.registry("queue policy").get(policy_name)
            sup.registry("task type").sync()
            scheme = store_url.split(":", 1)[0]
            store = sup.registry("status store").get(scheme).factory(store_url, sup)
            timer = Timer(f"atasker_{sup.name}_timer", sup.report_internal_error)
            try:
                with dispatch.lock:
                    dispatch.store = store
                    dispatch.timer = timer
                self.offer_options(options)
            except BaseException:
                timer.stop()
                store.close()
                raise
            self.policy_name = policy_name
            with dispatch.lock:
                dispatch.reset()
                dispatch.active = True
                dispatch.stopping = False
            self.stopped.clear()
            if not self.ever_started:
                self.ever_started = True
                watch_supervisor(sup)
        self.call_observer("atasker_supervisor_started", supervisor=sup)

    def offer_options(self, options: dict[str, Any]) -> None:
        """Give ``start()`` options to the plugins; raise for one nobody took."""
        sup = self.supervisor
        pm = sup.plugin_manager
        handled: set[str] = set()
        for names in pm.hook.atasker_supervisor_starting(supervisor=sup, options=dict(options)):
            handled.update(names or ())
        unknown = sorted(set(options) - handled)
        if not unknown:
            return
        hints = []
        for option in unknown:
            provider = OPTION_PROVIDERS.get(option)
            if provider is not None:
                why = ", which is blocked" if pm.is_blocked(provider) else ", which is not registered"
                hints.append(f"{option}= needs plugin {provider!r}{why}")
        raise TypeError(
            f"start() got option(s) no registered plugin handles: {', '.join(unknown)}"
            + ("; " + "; ".join(hints) if hints else "")
        )

    def ensure_started(self) -> None:
        """See :meth:`TaskSupervisor.ensure_started`."""
        if self.dispatch.active:
            return
        with self.config_lock:
            if self.dispatch.active:
                return
            if self.ever_started:
                raise SupervisorStoppedError(
                    f"task supervisor {self.supervisor.name!r} is stopped; call start() to use it again"
                )
            self.start(None, None, {})

    def call_observer(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook if implemented; its errors are reported, never raised."""
        sup = self.supervisor
        pm = sup.plugin_manager
        if not pm.has_impls(hook_name):
            return
        try:
            getattr(pm.hook, hook_name)(**kwargs)
        except KeyboardInterrupt:
            raise  # Ctrl-C is the user's, not the plugin's error
        except BaseException as exc:
            sup.report_internal_error(exc, f"hook {hook_name}")

    # ----------------------------------------------------------------- stop

    def own_tasks(self, wait: bool | float) -> int:
        """How many unfinished tasks the calling thread itself holds.

        A task calling ``stop()`` cannot end before it returns, nor can the
        next task its worker already took; a thread that reports the
        outcomes of *other* tasks cannot wait at all.
        """
        sup = self.supervisor
        state = thread_state
        current = state.running or state.reporting
        if current is None or current.supervisor is not sup:
            return 0
        waits = wait is not False and wait != 0
        if state.running is None and state.reporting is not state.ran and waits and sup.is_active():
            raise RuntimeError(
                f"stop(wait={wait!r}) called on {threading.current_thread().name}, which reports the "
                f"outcomes of supervisor {sup.name!r}'s other tasks: it would wait for itself; call "
                "stop(wait=False) there, or stop from another thread"
            )
        return 1 + state.held

    def stop(self, wait: bool | float, cancel_tasks: bool) -> bool:
        """See :meth:`TaskSupervisor.stop`."""
        check_wait(wait)  # before any state changes: a bad value leaves it running
        if wait is not False and _handling_interrupt():
            return stop_on_interrupt([self.supervisor])
        sup, dispatch = self.supervisor, self.dispatch
        if self.must_defer(wait):
            # A signal handler may have interrupted this very thread inside
            # a lock stop() takes; the timer thread would wait for itself.
            # Neither takes a lock here: a new thread does the stop.
            _thread.start_new_thread(self.stop_in_thread, (wait, cancel_tasks))
            return False
        own = self.own_tasks(wait)
        if sup.is_active():
            self.call_observer("atasker_supervisor_stopping", supervisor=sup, wait=wait, cancel_tasks=cancel_tasks)
        with dispatch.lock:
            if not dispatch.active:
                return dispatch.unfinished() == 0
            if dispatch.stopping:
                ongoing = True
            else:
                ongoing, dispatch.stopping = False, True
                self.stopper = threading.get_ident()
                self.stop_done.clear()
        if ongoing:
            return self.join_stop(wait, own)
        try:
            all_done = self.stop_now(wait, cancel_tasks, own)
        finally:
            self.stop_done.set()
        return all_done

    def must_defer(self, wait: bool | float) -> bool:
        """Whether this ``stop()`` runs where it must neither lock nor wait."""
        if threading.get_ident() == threading.main_thread().ident:
            return in_signal_handler()
        timer = self.dispatch.timer
        return wait is not False and timer is not None and timer.on_timer_thread()

    def stop_in_thread(self, wait: bool | float, cancel_tasks: bool) -> None:
        """A new thread's start: a proper ``threading`` thread runs the stop."""
        threading.Thread(
            target=self.stop, args=(wait, cancel_tasks), name=f"atasker_{self.supervisor.name}_stop", daemon=True
        ).start()

    def join_stop(self, wait: bool | float, own: int) -> bool:
        """Another thread's ``stop()`` is under way: wait as *wait* says for
        the same drain, and return its result (or whether it is over yet)."""
        dispatch = self.dispatch
        if self.stopper == threading.get_ident() or wait is False or own:
            # The stop's own thread (a hook), a stop that must not wait, or a
            # task: the drain waits for its tasks, so it can wait only for the others.
            with dispatch.lock:
                if wait is not False and self.stopper != threading.get_ident():
                    self.wait_unfinished(wait, own)
                return dispatch.unfinished() <= own
        deadline = None if wait is True else time.monotonic() + float(wait)
        while not self.stop_done.wait(wait_timeout(deadline)):
            if wait_timeout(deadline) == 0:
                return False
        return self.stop_result

    def stop_now(self, wait: bool | float, cancel_tasks: bool, own: int) -> bool:
        """The stop itself: drain, close and shut down every executor, hooks, timer."""
        sup, dispatch = self.supervisor, self.dispatch
        self.stop_result = False
        if cancel_tasks or wait is False:
            dispatch.cancel_all_queued()
        # Drained without config_lock: tasks may still call set_pool() etc.
        all_done = self.drain(wait, own)
        with self.config_lock:
            for slot in list(dispatch.slots.values()):
                dispatch.close(slot)
                try:
                    slot.executor.shutdown(wait=all_done)
                except Exception as exc:
                    sup.report_internal_error(exc, f"shutdown of {slot.pool.tt} executor")
            self.call_observer(
                "atasker_supervisor_stopped", supervisor=sup, wait=wait, cancel_tasks=cancel_tasks, all_done=all_done
            )
            dispatch.unretrieved.flush()
            timer = dispatch.timer
            if timer is not None:
                timer.stop()
            with dispatch.lock:
                dispatch.timer = None
                dispatch.active = False
                dispatch.stopping = False
            self.stopped.set()
        # A store is closed once it has every final record (the calling
        # task's comes after this; the at-exit fallback closes it then).
        self.stop_result = all_done
        store = dispatch.store
        if store is not None and all_done and not own:
            store.close()
        return all_done

    def wait_unfinished(self, wait: bool | float, own: int) -> bool:
        """Wait (lock held) until no more than *own* tasks are unfinished, or *wait* ran out."""
        dispatch = self.dispatch
        deadline = None if wait is True else time.monotonic() + float(wait)
        while dispatch.unfinished() > own:
            timeout = wait_timeout(deadline)
            if timeout == 0:
                break
            dispatch.all_done.wait(timeout)
        return dispatch.unfinished() <= own

    def drain(self, wait: bool | float, own: int) -> bool:
        """Wait as ``stop(wait)`` says for every task but the caller's *own*.

        :returns: whether they all ended; if a timed wait ran out, what is
            still queued is cancelled and what still runs is logged.
        """
        dispatch = self.dispatch
        if wait is False:
            with dispatch.lock:
                return dispatch.unfinished() <= own
        with dispatch.lock:
            all_done = self.wait_unfinished(wait, own)
        if not all_done:
            dispatch.cancel_all_queued()
            running = dispatch.running_tasks()
            logger.warning(
                "task supervisor %r stopped after %s s with %d task(s) still running: %s",
                self.supervisor.name,
                wait,
                len(running),
                ", ".join(f"{t.id} ({t.name})" for t in running[:20]),
            )
        return all_done
