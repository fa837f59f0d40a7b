"""Dispatch: from an accepted task to a started one, and from an outcome
to a resolved handle and the next start.

::

    submit(): hook wrap_task_call (task.func) ─▶ executor.validate ─▶ accept
    accept(task) ─▶ store.task_queued ─▶ hook task_queued
        │ delay? ─▶ delayed + timer ──(due)──────┐
        ▼                                        ▼
    enqueue(): fast path (nothing waits, room) or policy.push ─▶ hook task_waiting
        ▼
    admit(): policy.pop_next(pool) while the pool has room   (under the lock)
        ▼
    launch(): store.task_started ─▶ hook task_started ─▶ executor.start(task)
                                                              │
    task_done(task, result | exception | cancelled) ◀─────────┘
        ▼
    release(): store.task_finished, free the slot, admit() the next
        ▼
    resolve(): callback ─▶ handle resolved ─▶ hook task_finished ─▶ ended

One lock guards pools, queues and the delayed tasks; it is never held while
user code, an executor, a store or a hook runs.  Once ``stop()`` begins, no
task is accepted; once it shuts an executor down, :meth:`Dispatcher.close`
makes sure no task of that type is admitted any more (what still waits is
cancelled), and a task admitted just before that which the executor refuses
fails with the executor's error: a handle always resolves.

Nothing that reports an outcome lets an exception escape -- not even
``SystemExit`` from a callback, a done-callback or an observer hook: it is
reported as an internal error and the reporting thread (a pool thread, the
timer, a manager or event-loop thread) goes on serving.  Only a
``KeyboardInterrupt`` on the main thread is raised, once the task is
accounted for.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures._base import CANCELLED_AND_NOTIFIED
from typing import TYPE_CHECKING, Any

from atasker.core.pool import Pool
from atasker.core.task import (
    TASK_STATUS_CANCELED,
    TASK_STATUS_COMPLETED,
    TASK_STATUS_QUEUED,
    TASK_STATUS_STARTED,
    Task,
    thread_state,
)
from atasker.errors import AtaskerError, SupervisorStoppedError

if TYPE_CHECKING:
    from atasker.core.timer import Timer, TimerHandle
    from atasker.plugin.protocols import Executor, QueuePolicy, StatusStore

__all__ = ["Dispatcher", "Slot"]

logger = logging.getLogger("atasker")

_RUNNING = "RUNNING"  # concurrent.futures._base.RUNNING; set without the condition, see admit()
_FINISHED = "FINISHED"  # concurrent.futures._base.FINISHED


class Slot:
    """One task type in one supervisor: its pool, queue policy and executor."""

    __slots__ = ("closed", "executor", "fast_path", "policy", "pool", "running")

    def __init__(self, pool: Pool, policy: QueuePolicy, executor: Executor) -> None:
        self.pool = pool
        self.policy = policy
        self.executor = executor
        self.running: set[Task] = set()
        # With nothing waiting, such a policy admits exactly what
        # Pool.may_start allows: the dispatcher may skip push/pop.
        self.fast_path = bool(policy.fast_path)
        #: Set (under the dispatcher's lock) before its executor shuts down.
        self.closed = False


class UnretrievedErrors:
    """Failed tasks are logged the way asyncio logs its futures.

    A failure is logged at DEBUG when it happens; at ERROR, with its
    traceback, only if nobody ever retrieved the exception -- neither
    ``result()`` nor ``exception()`` was called -- by the time the handle
    is garbage-collected or the supervisor stops.  A caller that handles
    its errors sees no log noise; a forgotten failure is never silent.
    """

    #: Pending reports are pruned of the ones that ran once there are this many.
    PRUNE_AT = 1024

    def __init__(self) -> None:
        self._pending: list[weakref.finalize[Any, Any]] = []

    def watch(self, task: Task, exception: BaseException) -> None:
        """*task* failed with *exception*: log it at ERROR unless it is retrieved."""
        logger.debug("task %s (%s) failed: %s: %s", task.id, task.name, type(exception).__name__, exception)
        if isinstance(exception, AtaskerError):
            detail = f"{type(exception).__name__}: {exception}"
        elif logger.isEnabledFor(logging.ERROR):
            # Formatted now: the report must not keep the exception (and,
            # through its traceback, the task) alive.
            detail = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
        else:
            return
        report = weakref.finalize(task, _log_unretrieved, task.id, task.name, detail)
        report.atexit = False
        task.unretrieved = report
        pending = self._pending
        pending.append(report)
        if len(pending) >= self.PRUNE_AT:
            pending[:] = [r for r in pending if r.alive]

    def flush(self) -> None:
        """Log every pending report now (the supervisor stops)."""
        pending, self._pending = self._pending, []
        for report in pending:
            report()


def _log_unretrieved(task_id: int, name: str, detail: str) -> None:
    logger.error("task %s (%s) failed and its exception was never retrieved:\n%s", task_id, name, detail.rstrip())


def force_cancel(task: Future[Any]) -> None:
    """Mark a *running* future cancelled (``Future.cancel`` refuses once running).

    For an executor that really stopped a running task (a killed process, a
    cancelled coroutine), so that ``cancelled()`` tells the truth.
    """
    cond = task._condition  # concurrent.futures internals, see CPython's Future
    with cond:
        if task.done():
            return
        task._state = CANCELLED_AND_NOTIFIED
        for waiter in task._waiters:
            waiter.add_cancelled(task)
        cond.notify_all()
    task._invoke_callbacks()  # type: ignore[attr-defined]  # CPython's Future has it; typeshed does not list it


class Dispatcher:
    """The task flow of one supervisor: accept, admit, launch, report, cancel.

    :param name: the supervisor's name, for messages.
    :param internal_error: ``internal_error(exc, where)`` reports an error
        of an observer, callback or store without raising.
    """

    def __init__(self, name: str, internal_error: Callable[[BaseException, str], None]) -> None:
        self.name = name
        self.internal_error = internal_error
        self.lock = threading.Lock()
        self.all_done = threading.Condition(self.lock)
        self.slots: dict[str, Slot] = {}
        #: Tasks accepted with a delay that is not over yet, and their timer
        #: call (``None`` until scheduled), cancelled with the task so that
        #: the timer does not keep its arguments alive until the due time.
        self.delayed: dict[Task, TimerHandle | None] = {}
        self.store: StatusStore | None = None
        #: Failed tasks whose exception nobody retrieved yet (logged then).
        self.unretrieved = UnretrievedErrors()
        self.timer: Timer | None = None
        self.active = False
        #: From the moment stop() begins: no task is accepted any more.
        self.stopping = False
        # Accepted minus ended tasks.  Ends are counted by an itertools.count
        # (next() is atomic under the GIL) so that finishing a task takes the
        # lock once, not twice: a busy pool contends on it.
        self._accepted = 0
        self._ended = itertools.count()
        self._reads = 0
        #: Observer hook callers, see PluginManager.observer (``None``: no
        #: plugin implements the hook).
        self.on_queued: Callable[[Task], object] | None = None
        self.on_waiting: Callable[[Task], object] | None = None
        self.on_started: Callable[[Task], object] | None = None
        self.on_finished: Callable[[Task], object] | None = None
        #: The ``atasker_wrap_task_call`` implementations, see PluginManager.chain
        #: (empty: the task runs its function as submitted).
        self.call_wrappers: tuple[Callable[..., Any], ...] = ()

    def take_hooks(self, pm: Any) -> None:
        """Read the observers and call wrappers from plugin manager *pm* (after its plugins changed)."""
        self.on_queued = pm.observer("atasker_task_queued")
        self.on_waiting = pm.observer("atasker_task_waiting")
        self.on_started = pm.observer("atasker_task_started")
        self.on_finished = pm.observer("atasker_task_finished")
        self.call_wrappers = pm.chain("atasker_wrap_task_call")

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's threads, workers and records are not ours.

        New locks (another thread of the parent may have held them at the
        fork), no slots, no store, no timer, not active: the child's first
        use starts the supervisor afresh.
        """
        self.lock = threading.Lock()
        self.all_done = threading.Condition(self.lock)
        self.store = None
        self.timer = None
        self.active = self.stopping = False
        self.reset()

    def reset(self) -> None:
        """Forget the counts of the previous run (``start()``, under the lock)."""
        self.slots = {}
        self.delayed = {}
        self._accepted = self._reads = 0
        self._ended = itertools.count()

    # ------------------------------------------------------------- submission

    def wrap_call(self, task: Task) -> None:
        """Let each ``atasker_wrap_task_call`` wrap ``task.func`` in turn (submitting thread)."""
        call = task.func
        for wrap in self.call_wrappers:
            try:
                wrapped = wrap(task=task, call=call)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a plugin's error must not reject the user's task
                self.internal_error(exc, "hook atasker_wrap_task_call")
                continue
            if wrapped is not None:
                call = wrapped
        task.func = call

    def accept(self, slot: Slot, task: Task) -> None:
        """Count *task* in, record it and queue it (or its delay)."""
        with self.lock:
            if not self.active or self.stopping:
                why = (
                    "is stopping: it finishes the tasks it has and accepts no new ones" if self.active else "is stopped"
                )
                raise SupervisorStoppedError(f"task supervisor {self.name!r} {why}; task {task.name!r} rejected")
            self._accepted += 1
            if task.delay:
                self.delayed[task] = None
        store = self.store
        assert store is not None
        try:
            store.task_queued(task)
        except BaseException:
            # The task was never queued: un-count it, so stop() cannot wait
            # for it, and let the caller see the store's error.
            with self.lock:
                self._accepted -= 1
                self.delayed.pop(task, None)
                if self.stopping:
                    self.all_done.notify_all()
            raise
        if self.on_queued is not None:
            self.observe(self.on_queued, task, "atasker_task_queued")
        if task.delay:
            timer = self.timer
            try:
                if timer is None:
                    raise RuntimeError("no timer")
                handle = timer.call_later(task.delay, self.delay_over, slot, task)
            except RuntimeError:  # stopped meanwhile: stop() cancelled (or cancels) the task
                self.cancel(task)
                return
            with self.lock:
                if task in self.delayed:
                    self.delayed[task] = handle
                    return
            handle.cancel()  # cancelled meanwhile
        else:
            self.enqueue(slot, task)

    def delay_over(self, slot: Slot, task: Task) -> None:
        """Timer callback: a delayed task joins its queue."""
        with self.lock:
            if self.delayed.pop(task, False) is False:
                return  # cancelled meanwhile
        self.enqueue(slot, task)

    def enqueue(self, slot: Slot, task: Task) -> None:
        """Start *task* now if it may start, else leave it to its queue policy."""
        with self.lock:
            if task.status != TASK_STATUS_QUEUED:
                return  # cancelled
            policy = slot.policy
            closed = slot.closed
            if closed:
                started = None  # its executor shut down: cancelled below
            elif slot.fast_path and not len(policy) and slot.pool.may_start(task.band):
                # Nothing waits and there is room: any queue order would start
                # this task now, so skip the push/pop round trip.
                started = self.admit(slot, task)
            else:
                policy.push(task)
                task.in_queue = True
                started = self.admit(slot)
            waiting = task.status == TASK_STATUS_QUEUED
        if closed:
            self.cancel(task)
            return
        if waiting and self.on_waiting is not None:
            self.observe(self.on_waiting, task, "atasker_task_waiting")
        if started:
            self.launch(slot, started)

    def admit(self, slot: Slot, first: Task | None = None) -> list[Task]:
        """Pop every task the policy lets start now (*first*: one already
        admitted by the fast path).  Call with the lock held."""
        started: list[Task] = []
        pool, policy = slot.pool, slot.policy
        while True:
            if first is not None:
                task, first = first, None
            else:
                popped = policy.pop_next(pool)
                if popped is None:
                    return started
                task = popped
                task.in_queue = False
            # The future goes RUNNING without taking its condition: only
            # cancel() could race, and it decides under this same lock.
            task._state = _RUNNING  # Future internals, see above
            task.status = TASK_STATUS_STARTED
            task.time_started = time.time()
            pool.running += 1
            rbp = pool.running_by_priority
            rbp[task.priority] = rbp.get(task.priority, 0) + 1
            slot.running.add(task)
            started.append(task)

    def launch(self, slot: Slot, tasks: list[Task]) -> None:
        """Announce admitted tasks and hand them to their executor."""
        executor = slot.executor
        for task in tasks:
            self.announce_started(task)
            try:
                executor.start(task)
            except KeyboardInterrupt:
                # Ctrl-C landed in start(): the executor may have the task
                # already, so it is not failed here; the ones after it were
                # never handed over, and stop() must not wait for them.
                for rest in tasks[tasks.index(task) + 1 :]:
                    self.task_done(rest, cancelled=True)
                raise
            except BaseException as exc:
                self.task_done(task, exception=exc)

    def announce_started(self, task: Task) -> None:
        store = self.store
        if store is not None:
            try:
                store.task_started(task)
            except BaseException as exc:  # the task is admitted: it must still run and resolve
                self.internal_error(exc, "status store task_started")
        if self.on_started is not None:
            self.observe(self.on_started, task, "atasker_task_started")

    # ------------------------------------------------------------- completion

    def task_done(
        self,
        task: Task,
        result: Any = None,
        exception: BaseException | None = None,
        cancelled: bool = False,
        take_next: bool = False,
    ) -> Task | None:
        """See :meth:`TaskSupervisor.task_done`."""
        if task._state == _FINISHED:
            # A second outcome for one task (an executor's bug): reporting it
            # again would free its slot twice and raise on the reporting thread.
            self.internal_error(
                AtaskerError(f"task {task.id} ({task.name}) already has an outcome; a second one was dropped"),
                "task_done",
            )
            return None
        task.time_finished = time.time()
        if cancelled:
            task.outcome = "cancelled"
            task.status = TASK_STATUS_CANCELED
        elif exception is not None:
            task.outcome = "failed"
            task.error = exception
            task.status = TASK_STATUS_COMPLETED
        else:
            task.outcome = "completed"
            task.status = TASK_STATUS_COMPLETED
        next_task = self.release(task, was_running=True, take_next=take_next)
        state = thread_state
        outer = state.reporting
        state.reporting = task
        if next_task is not None:
            # The callback and observers below run while this thread holds
            # the next task too: a stop() they call must not wait for it.
            state.held += 1
        try:
            self.resolve(task, result, exception, cancelled)
        finally:
            state.reporting = outer
            if state.ran is task:
                state.ran = None  # reported: the thread no longer keeps it alive
            if next_task is not None:
                state.held -= 1
        return next_task

    def resolve(self, task: Task, result: Any, exception: BaseException | None, cancelled: bool) -> None:
        """Resolve the handle, run the callback and the finished observers."""
        if cancelled:
            force_cancel(task)
        elif exception is not None:
            # Before the handle resolves, so a waiter finds the record.
            self.unretrieved.watch(task, exception)
            task.set_exception(exception)
        else:
            # The callback runs before the handle resolves: whoever waits on
            # the handle can rely on the callback having run.
            interrupted = None
            if task.callback is not None:
                try:
                    if task.context is not None:
                        # In the submitter's context, as the function ran.
                        task.context.run(task.callback, result)
                    else:
                        task.callback(result)
                except BaseException as exc:  # even SystemExit: the handle must still resolve
                    self.internal_error(exc, f"callback of task {task.id} ({task.name})")
                    if isinstance(exc, KeyboardInterrupt):
                        interrupted = exc  # Ctrl-C is the user's: raised once the handle resolved
            task.set_result(result)
            if interrupted is not None:
                self.finished(task)
                raise interrupted
        self.finished(task)

    def release(self, task: Task, was_running: bool, take_next: bool = False) -> Task | None:
        """Drop the record, free the slot, start what may start now."""
        store = self.store
        if store is not None:
            try:
                store.task_finished(task)
            except BaseException as exc:
                self.internal_error(exc, "status store task_finished")
        if not was_running:
            return None
        slot = self.slots[task.tt]
        with self.lock:
            pool = slot.pool
            pool.running -= 1
            pool.running_by_priority[task.priority] -= 1
            slot.running.discard(task)
            started = self.admit(slot) if len(slot.policy) else None
        if not started:
            return None
        if take_next:
            next_task = started.pop(0)
            self.announce_started(next_task)
            if started:
                self.launch(slot, started)
            return next_task
        self.launch(slot, started)
        return None

    def unfinished(self) -> int:
        """Tasks accepted and not yet ended.  Call with the lock held.

        Reading an ``itertools.count`` means drawing from it, so each read
        is counted and subtracted.
        """
        self._reads += 1
        return self._accepted - (next(self._ended) - self._reads + 1)

    def finished(self, task: Task) -> None:
        """Observers, then the count ``stop(wait=True)`` waits on."""
        try:
            if self.on_finished is not None:
                self.observe(self.on_finished, task, "atasker_task_finished")
        finally:  # even after Ctrl-C in an observer: stop() must not wait for it
            next(self._ended)
            if self.stopping:
                with self.lock:
                    self.all_done.notify_all()

    def observe(self, observer: Callable[[Task], object], task: Task, hook_name: str) -> None:
        """Call an observer hook; its errors are reported, never raised."""
        try:
            observer(task)
        except BaseException as exc:  # even SystemExit: the dispatching thread must go on
            self.internal_error(exc, f"hook {hook_name}")
            if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
                raise  # Ctrl-C is the user's, not the plugin's error

    # --------------------------------------------------------------- cancel

    def cancel(self, task: Task) -> bool:
        """Cancel a queued or delayed task, or ask its executor to stop it."""
        with self.lock:
            status = task.status
            if status == TASK_STATUS_QUEUED:
                task.status = TASK_STATUS_CANCELED
                timer_call = self.delayed.pop(task, None)
                if timer_call is not None:
                    timer_call.cancel()  # drops the timer's reference to the task now
                if task.in_queue:
                    task.in_queue = False
                    slot = self.slots.get(task.tt)
                    if slot is not None:
                        slot.policy.remove(task)
        if status == TASK_STATUS_STARTED:
            slot = self.slots.get(task.tt)
            return bool(slot.executor.cancel(task)) if slot is not None else False
        if status != TASK_STATUS_QUEUED:
            return False
        # Status -1 under the lock means no dispatcher will start it: the
        # future is still PENDING, so Future.cancel succeeds and notifies.
        Future.cancel(task)
        # CANCELLED -> CANCELLED_AND_NOTIFIED: tells concurrent.futures.wait()
        # and as_completed() waiters, as an executor does for cancelled work.
        task.set_running_or_notify_cancel()
        task.time_finished = time.time()
        task.outcome = "cancelled"
        self.release(task, was_running=False)
        self.finished(task)
        return True

    def cancel_all_queued(self) -> None:
        """Cancel every queued and delayed task."""
        for task in self.waiting_tasks(include_delayed=True):
            task.cancel()

    def close(self, slot: Slot) -> None:
        """Admit no task of *slot* any more (its executor shuts down next).

        What still waits or is delayed is cancelled, and so is a task that
        reaches :meth:`enqueue` later (a submission or a delay in flight).
        """
        with self.lock:
            slot.closed = True
            tt = slot.pool.tt
            tasks = slot.policy.tasks() + [t for t in self.delayed if t.tt == tt]
        for task in tasks:
            self.cancel(task)

    # ------------------------------------------------------------ snapshots

    def waiting_tasks(self, include_delayed: bool) -> list[Task]:
        """Queued tasks (and delayed ones), a snapshot."""
        with self.lock:
            tasks = [t for slot in self.slots.values() for t in slot.policy.tasks()]
            if include_delayed:
                tasks += [t for t in self.delayed if t.status == TASK_STATUS_QUEUED]
        return tasks

    def info(self) -> dict[str, Any]:
        """Counts for :meth:`TaskSupervisor.get_info` (one consistent snapshot)."""
        with self.lock:
            task_types: dict[str, Any] = {}
            for tt, slot in self.slots.items():
                entry = slot.pool.info()
                entry["waiting"] = slot.policy.waiting()
                entry["waiting_total"] = len(slot.policy)
                task_types[tt] = entry
            return {
                "unfinished": self.unfinished(),
                "task_types": task_types,
                "delayed": len(self.delayed),
            }

    def running_tasks(self, tt: str | None = None) -> list[Task]:
        """Running tasks (of task type *tt*), a snapshot."""
        with self.lock:
            slots = self.slots.values() if tt is None else [s for t, s in self.slots.items() if t == tt]
            return [t for slot in slots for t in list(slot.running)]
