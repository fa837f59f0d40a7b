"""Aloops: asyncio loops the supervisor runs in their own threads.

::

    create_aloop("io")              ALoop "io"
          │                 ┌───────────────────────────────┐
          ▼                 │ thread supervisor_aloop_io    │
    ALoop.start() ─────────▶│   loop.run_until_complete(    │
                            │       _serve())               │
    coroutine task ─▶ policy ─▶ CoroutineExecutor.start ─▶ Feeder.push
                            │   Feeder.drain ─▶ create_task│
                            │   done ─▶ supervisor.task_done│
    stop(wait, cancel) ────▶│   _serve: drain every task,   │
                            │   then shutdown_asyncgens,    │
                            │   close                       │
                            └───────────────────────────────┘

An :class:`ALoop` owns one event loop and the thread that runs it.  Coroutine
tasks (``tt="coroutine"``) reach a loop through the supervisor's queue policy
like every other task type; the executor in :mod:`atasker.builtin.coroutine`
hands them to the loop's :class:`Feeder`, which batches cross-thread starts
into one loop wake-up.

:class:`Aloops` (extension ``"aloops"``) is the supervisor's half: ``create_aloop``, ``get_aloop``,
``start_aloop``, ``stop_aloop``, ``set_default_aloop`` and
``set_coroutine_pool``; the plugin adds it in ``atasker_configure`` and the
supervisor's methods of those names delegate to it, so that
:class:`~atasker.TaskSupervisor` needs no aloop code.

uvloop is optional: ``create_aloop(name, uvloop=True)`` requires it,
``ATASKER_UVLOOP=1`` makes it the default for aloops created without the
argument (falling back to asyncio, with a logged warning, when it is not
installed), and ``loop_factory=`` accepts any other loop implementation.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from atasker.builtin.coroutine.feeder import Feeder
from atasker.core.signals import unblock_signals
from atasker.core.task import TASK_NORMAL, Task
from atasker.errors import SupervisorStoppedError
from atasker.plugin.manager import env_flag

if TYPE_CHECKING:
    from atasker.core.supervisor import TaskSupervisor

__all__ = ["CANCEL_GRACE", "DEFAULT_ALOOP_NAME", "TT_COROUTINE", "ALoop"]

logger = logging.getLogger("atasker")

TT_COROUTINE = "coroutine"

#: Name of the aloop created for coroutine tasks when no default is set.
DEFAULT_ALOOP_NAME = "default"

#: Seconds a stopping aloop gives its tasks to finish after they were
#: cancelled because a timed wait ran out.  A coroutine that catches
#: ``CancelledError`` and goes on keeps its thread alive past this.
CANCEL_GRACE = 5.0


def _pick_loop_factory(
    use_uvloop: bool | None, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
) -> tuple[Callable[[], asyncio.AbstractEventLoop], bool]:
    """The event-loop factory of a new aloop, and whether it is uvloop."""
    if loop_factory is not None:
        if use_uvloop:
            raise ValueError("pass either uvloop=True or loop_factory, not both")
        return loop_factory, False
    required = use_uvloop is True
    if use_uvloop is None:
        use_uvloop = env_flag("ATASKER_UVLOOP")
    if not use_uvloop:
        return asyncio.new_event_loop, False
    try:
        import uvloop
    except ImportError as exc:
        if required:
            raise ImportError("create_aloop(uvloop=True) needs uvloop: pip install uvloop") from exc
        logger.warning("ATASKER_UVLOOP is set but uvloop is not installed; aloops use asyncio's default loop")
        return asyncio.new_event_loop, False
    return uvloop.new_event_loop, True


class ALoop:
    """An asyncio event loop running in its own thread ``supervisor_aloop_<name>``.

    Created with :meth:`TaskSupervisor.create_aloop`; coroutine tasks run on
    it when they name it (``loop=aloop`` or ``loop="name"``) or when it is the
    supervisor's default aloop.  Thread-safe.

    :param name: the aloop's name (unique in its supervisor).
    :param supervisor: the supervisor whose queue policy its tasks go through.
    :param daemon: run the loop in a daemon thread (the interpreter does not
        wait for it at exit; the supervisor still stops it on ``stop()``).
    :param uvloop: ``True`` -- use uvloop (``ImportError`` if missing);
        ``False`` -- asyncio's loop; ``None`` -- uvloop if ``ATASKER_UVLOOP=1``.
    :param loop_factory: a callable returning a new event loop (instead of
        *uvloop*).
    """

    def __init__(
        self,
        name: str,
        supervisor: TaskSupervisor,
        *,
        daemon: bool = False,
        uvloop: bool | None = None,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"aloop name must be a non-empty str, got {name!r}")
        self.name = name
        self.supervisor = supervisor
        self.daemon = daemon
        self._factory, self.uvloop = _pick_loop_factory(uvloop, loop_factory)
        self._lock = threading.Lock()
        # created -> running -> stopping -> stopped (-> running: start again)
        self._state = "created"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._feeder: Feeder | None = None
        self._finished = threading.Event()
        # Loop-thread state of the current run (see _serve / _control).
        self._stop_flag = False
        self._cancel_flag = False
        self._serve_task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None

    # --------------------------------------------------------------- control

    def start(self) -> None:
        """Start the loop thread (no-op if running; restarts a stopped aloop).

        Returns at once: the loop object exists before its thread runs, and
        work sent to it waits in the loop until the thread picks it up.

        :raises RuntimeError: the aloop is still stopping.
        :raises SupervisorStoppedError: its supervisor is stopping or stopped
            (a stopped supervisor owns no threads).
        """
        with self._lock:
            if self._state == "running":
                return
            if not self.supervisor.is_active():
                raise SupervisorStoppedError(
                    f"aloop {self.name!r}: task supervisor {self.supervisor.name!r} is stopping or stopped"
                )
            if self._state == "stopping":
                raise RuntimeError(f"aloop {self.name!r} is stopping; wait for stop() before starting it again")
            loop = self._factory()
            self._loop = loop
            self._feeder = Feeder(loop, f"aloop {self.name!r}")
            self._finished = threading.Event()
            self._stop_flag = self._cancel_flag = False
            self._serve_task = self._wakeup = None
            thread = threading.Thread(
                target=self._main,
                args=(loop, self._feeder, self._finished),
                name=f"supervisor_aloop_{self.name}",
                daemon=self.daemon,
            )
            self._thread = thread
            self._state = "running"
        thread.start()
        logger.debug("aloop %r started (%s)", self.name, type(loop).__name__)

    def stop(self, wait: bool | float = True, cancel_tasks: bool = False) -> bool:
        """Stop the loop once its tasks are done, then close it.

        New coroutine tasks for this aloop are refused from the moment this
        is called; tasks already on it (atasker coroutine tasks and any other
        asyncio task) run to completion unless *cancel_tasks*.

        :param wait: ``True`` -- wait until every task ended and the thread
            exited; a number -- wait at most that many seconds, then log a
            warning naming the tasks still pending, cancel them and wait up to
            :data:`CANCEL_GRACE` seconds for the thread; ``False`` -- return at
            once (the loop finishes its tasks in its thread, then closes).
        :param cancel_tasks: cancel every task on the loop first (coroutine
            task handles end cancelled).
        :returns: ``True`` if the loop finished without a timeout.
        """
        if not self._request_stop(cancel_tasks):
            return True
        if wait is False:
            return self._finished.is_set()
        deadline = None if wait is True else time.monotonic() + float(wait)
        return self._await_stop(deadline, wait)

    def _request_stop(self, cancel_tasks: bool) -> bool:
        """Tell the loop to stop; ``False`` if it was not started."""
        with self._lock:
            if self._state in ("created", "stopped"):
                return False
            first = self._state == "running"
            self._state = "stopping"
        if first or cancel_tasks:
            self._post(self._control, True, cancel_tasks)
        return True

    def _await_stop(self, deadline: float | None, wait: Any) -> bool:
        """Wait for the thread until *deadline*; on timeout warn, cancel, wait a grace."""
        if self._thread is threading.current_thread():
            return False  # called from a task on this loop: it stops once that returns
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if self._join(remaining):
            return True
        self._expire(wait)
        self._join_after_cancel()
        return False

    def _join(self, timeout: float | None) -> bool:
        """Wait until the loop thread ended; ``False`` on timeout or from that thread."""
        thread = self._thread
        if thread is threading.current_thread():
            return False  # a task on this loop cannot wait for its own loop
        if not self._finished.wait(timeout):
            return False
        if thread is not None:
            thread.join()
        return True

    def _expire(self, wait: Any) -> None:
        """A timed wait ran out: log the pending tasks by name, cancel them all."""
        pending = self.pending_tasks()
        if pending:
            logger.warning(
                "aloop %r: %d task(s) still pending after waiting %s s, cancelling: %s",
                self.name,
                len(pending),
                wait,
                ", ".join(pending[:20]) + (" ..." if len(pending) > 20 else ""),
            )
        self._post(self._control, True, True)

    def _join_after_cancel(self) -> None:
        if not self._join(CANCEL_GRACE) and self._thread is not threading.current_thread():
            logger.error(
                "aloop %r did not stop %s s after its tasks were cancelled: a task ignores cancellation",
                self.name,
                CANCEL_GRACE,
            )

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # already closed: nothing left to control

    # ----------------------------------------------------------- loop thread

    def _main(self, loop: asyncio.AbstractEventLoop, feeder: Feeder, finished: threading.Event) -> None:
        # SIGINT stays unblocked here, unlike atasker's service threads:
        # coroutines start child processes (asyncio.create_subprocess_exec)
        # from this thread, and they inherit its mask.  Linux hands a
        # process-directed Ctrl-C to the main thread first anyway.
        unblock_signals()
        try:
            loop.run_until_complete(self._serve(feeder))
        except BaseException:
            logger.exception("aloop %r crashed", self.name)
        finally:
            try:
                feeder.closing = True
                _cancel_leftovers(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            except BaseException:
                logger.exception("aloop %r: error while closing", self.name)
            finally:
                feeder.closed = True
                loop.close()
                feeder.reject_pending()
                with self._lock:
                    if self._loop is loop:
                        self._state = "stopped"
                        self._loop = None
                finished.set()
                logger.debug("aloop %r stopped", self.name)

    async def _serve(self, feeder: Feeder) -> None:
        """Idle until stopped, then wait for every other task on the loop."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        self._serve_task = me
        while not self._stop_flag:
            self._wakeup = loop.create_future()
            try:
                await self._wakeup
            except asyncio.CancelledError:
                # User code that cancels "every task on the loop" must not
                # stop the aloop: only stop() does.
                _uncancel(me)
                continue
        while True:
            pending = [t for t in asyncio.all_tasks() if t is not me]
            if not pending:
                # Let callbacks already queued (feeder drains, threadsafe
                # submissions) create their tasks, then look once more.
                await asyncio.sleep(0)
                pending = [t for t in asyncio.all_tasks() if t is not me]
                if not pending:
                    break
            if self._cancel_flag:  # also tasks started after _control ran
                for t in pending:
                    t.cancel()
            # All of them, not FIRST_COMPLETED: one pass per batch keeps a
            # stop with many pending tasks linear.
            try:
                await asyncio.wait(pending)
            except asyncio.CancelledError:
                _uncancel(me)
                continue  # as above: only stop() decides when the loop ends
        feeder.closing = True  # no task may start any more: the loop closes

    def _control(self, stop: bool, cancel: bool) -> None:
        """Loop thread: set the stop / cancel flags and wake ``_serve``."""
        if stop:
            self._stop_flag = True
        if cancel:
            self._cancel_flag = True
            me = self._serve_task
            if me is not None:  # else _serve cancels them when it starts
                for t in asyncio.all_tasks(self._loop):
                    if t is not me:
                        t.cancel()
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    # ------------------------------------------------------------- user API

    def is_active(self) -> bool:
        """Whether the loop runs and accepts tasks (started, not stopping)."""
        return self._state == "running"

    def get_loop(self) -> asyncio.AbstractEventLoop | None:
        """The asyncio loop while the aloop is active, else ``None``."""
        return self._loop if self._state == "running" else None

    @property
    def thread(self) -> threading.Thread | None:
        """The thread that runs the loop (``None`` before the first start)."""
        return self._thread

    def background_task(
        self,
        coro: Awaitable[Any] | Callable[[], Awaitable[Any]],
        *,
        priority: int = TASK_NORMAL,
        name: str | None = None,
        callback: Callable[[Any], Any] | None = None,
        delay: float | None = None,
        timeout: float | None = None,
    ) -> Task:
        """Run a coroutine on this aloop as a coroutine task; return its handle.

        The task goes through the supervisor's queue policy like any other
        (priorities and the coroutine pool apply).  Never blocks; safe from
        any thread and from coroutines on any loop.

        :param coro: a coroutine object (or any awaitable), or an async
            function taking no arguments.  A coroutine object whose task is
            cancelled before it started is closed, so it never warns "was
            never awaited".
        :param priority: task priority.
        :param name: task name (default: the coroutine's qualified name).
        :param callback: ``callback(result)`` after success.
        :param delay: seconds to wait before queueing.
        :param timeout: seconds the coroutine may run; then it is cancelled
            and the handle fails with :class:`TimeoutError`.
        :raises AloopStoppedError: the aloop is not running.
        """
        if callable(coro) and not inspect.isawaitable(coro):
            func: Callable[[], Any] = coro
            closer = None
        else:
            if not inspect.isawaitable(coro):
                raise TypeError(f"background_task needs a coroutine or an async function, got {coro!r}")
            func = closer = _AwaitableCall(coro)
        if name is None:
            name = getattr(coro, "__qualname__", None) or getattr(coro, "__name__", None) or repr(coro)
        try:
            task = self.supervisor.submit(
                func,
                tt=TT_COROUTINE,
                priority=priority,
                name=name,
                delay=delay,
                callback=callback,
                timeout=timeout,
                options={"loop": self},
            )
        except BaseException:
            if closer is not None:
                closer.close()
            raise
        if closer is not None:
            task.add_done_callback(closer.discard)
        return task

    def run(
        self, coro: Awaitable[Any] | Callable[[], Awaitable[Any]], timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Run a coroutine on this aloop and block until it returns its result.

        For blocking code (threads, the main thread).  From a coroutine use
        ``await aloop.background_task(coro)`` instead: ``run`` blocks the
        calling thread, and from the aloop's own thread it would deadlock.

        :param coro: as for :meth:`background_task`.
        :param timeout: seconds to wait; then the task is cancelled and
            :class:`TimeoutError` raised.
        :param kwargs: passed to :meth:`background_task` (``priority``, ...).
        :raises RuntimeError: called from this aloop's thread.
        :raises Exception: whatever the coroutine raised.
        """
        if threading.current_thread() is self._thread:
            if inspect.iscoroutine(coro):
                coro.close()
            raise RuntimeError(
                f"aloop {self.name!r}: run() from the aloop's own thread would deadlock; "
                "await the coroutine (or aloop.background_task(coro)) instead"
            )
        task = self.background_task(coro, **kwargs)
        try:
            return task.result(timeout)
        except concurrent.futures.TimeoutError:  # the builtin one since 3.11
            task.cancel()
            raise TimeoutError(
                f"aloop {self.name!r}: task {task.id} ({task.name}) did not finish in {timeout} s; cancelled"
            ) from None

    def pending_tasks(self) -> list[str]:
        """Names of the asyncio tasks pending on the loop (any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return []
        me = self._serve_task
        return [_describe(t) for t in asyncio.all_tasks(loop) if t is not me]

    def __repr__(self) -> str:
        kind = " uvloop" if self.uvloop else ""
        return f"<ALoop {self.name!r} {self._state}{kind}>"


class _AwaitableCall:
    """A zero-argument callable returning an awaitable made earlier.

    ``discard`` closes a coroutine that never ran (task cancelled while
    queued, aloop stopped), which is what silences "was never awaited".
    """

    __slots__ = ("aw",)

    def __init__(self, aw: Awaitable[Any]) -> None:
        self.aw: Awaitable[Any] | None = aw

    def __call__(self) -> Awaitable[Any]:
        aw = self.aw
        if aw is None:
            raise RuntimeError("this coroutine task was already started")
        self.aw = None
        return aw

    def close(self) -> None:
        aw, self.aw = self.aw, None
        if inspect.iscoroutine(aw):
            aw.close()

    def discard(self, _task: object = None) -> None:
        self.close()


def _describe(task: asyncio.Task[Any]) -> str:
    name = task.get_name()
    if name.startswith("Task-"):
        coro = task.get_coro()
        qualname = getattr(coro, "__qualname__", None)
        if qualname:
            return f"{name} ({qualname})"
    return name


def _uncancel(task: asyncio.Task[Any] | None) -> None:
    """Forget a cancellation request that was handled (3.11+: ``Task.uncancel``)."""
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel and finish tasks still pending (what ``asyncio.run`` does)."""
    pending = asyncio.all_tasks(loop)
    if not pending:
        return
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
