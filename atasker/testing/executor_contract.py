"""The behaviours every task type must have, as a pytest base class.

::

    from atasker.testing import ExecutorContract, Gate
    import my_plugin

    def double(x):
        return 2 * x

    class TestMyTaskType(ExecutorContract):
        tt = "mine"
        can_cancel_running = True
        supports_timeout = True

        def supervisor_options(self):
            return {"autoload": False, "plugins": [my_plugin]}

The adapters (:meth:`~ExecutorContract.returning`,
:meth:`~ExecutorContract.raising`, :meth:`~ExecutorContract.blocking`)
default to the module-level functions of :mod:`atasker.testing.tasks`, which
suit any task type that calls ``func(*args)`` in this process or pickles it
to another one; override them for a task type whose functions mean something
else (return a command line, must be ``async def``, ...).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from atasker import (
    TASK_HIGH,
    TASK_LOW,
    TASK_NORMAL,
    SupervisorStoppedError,
    Task,
    TaskSupervisor,
    hookimpl,
)

from .tasks import Gate, raise_value_error, return_value, wait_gate

__all__ = ["ExecutorContract", "TaskRecorder"]

Call = tuple[Callable[..., Any], tuple[Any, ...]]


class TaskRecorder:
    """A plugin that records ``atasker_task_started`` / ``atasker_task_finished``.

    Register it with ``supervisor.register_plugin(recorder)``; thread-safe.
    """

    __name__ = "atasker-contract-recorder"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        #: Task ids in the order they were handed to the executor.
        self.started: list[int] = []
        #: How many times each task id was reported finished.
        self.finished: Counter[int] = Counter()

    @hookimpl
    def atasker_task_started(self, task: Task) -> None:
        with self._cond:
            self.started.append(task.id)
            self._cond.notify_all()

    @hookimpl
    def atasker_task_finished(self, task: Task) -> None:
        with self._cond:
            self.finished[task.id] += 1
            self._cond.notify_all()

    def wait_finished(self, tasks: list[Task], timeout: float) -> bool:
        """Wait until every task in *tasks* was reported finished at least once."""
        ids = [t.id for t in tasks]
        with self._cond:
            return self._cond.wait_for(lambda: all(self.finished[i] for i in ids), timeout)


class ExecutorContract:
    """Behavioural suite for a task type: subclass it in a test module.

    Set :attr:`tt`, the capability flags, and override
    :meth:`supervisor_options` (plugins to register) and, if plain functions
    are not what the task type runs, the adapters :meth:`returning`,
    :meth:`raising`, :meth:`blocking` and the comparison
    :meth:`check_result`.  :meth:`configure_supervisor` runs after the
    supervisor started (e.g. to point it at a cluster).

    Every test gets its own started supervisor (fixture ``supervisor``),
    stopped afterwards; gates made with the ``gate`` fixture are opened before
    that, so nothing outlives the test.  Waits are bounded by
    :attr:`wait_timeout` and only reached when something is wrong.
    """

    #: The task type under test (``submit(..., tt=tt)``).
    tt: str = "thread"
    #: ``cancel()`` of a running task stops it and the handle ends cancelled.
    can_cancel_running: bool = False
    #: ``submit(..., timeout=...)`` fails a task that runs too long with a TimeoutError.
    supports_timeout: bool = False
    #: Seconds any single wait may take before the test fails.
    wait_timeout: float = 30.0
    #: Tasks submitted by the "many tasks" test.
    many: int = 200

    # ------------------------------------------------------------ to override

    def supervisor_options(self) -> dict[str, Any]:
        """Keyword arguments for ``TaskSupervisor(...)`` (plugins to register, ...).

        ``queue_policy`` and ``status_store`` default to ``"priority"`` and
        ``"memory://"`` (the behaviours below assume them) unless given here.
        """
        return {"autoload": False}

    def configure_supervisor(self, supervisor: TaskSupervisor) -> None:
        """Called once the test's supervisor has started; default: nothing."""

    def returning(self, value: Any) -> Call:
        """``(func, args)`` of a task whose result is *value* (see :meth:`check_result`)."""
        return return_value, (value,)

    def raising(self, message: str) -> Call:
        """``(func, args)`` of a task that fails with ``ValueError(message)``."""
        return raise_value_error, (message,)

    def blocking(self, gate: Gate) -> Call:
        """``(func, args)`` of a task that announces itself on *gate*, then blocks until it opens."""
        return wait_gate, (gate,)

    def check_result(self, result: Any, expected: Any) -> None:
        """Assert that a task made by ``returning(expected)`` produced *result*."""
        assert result == expected

    # --------------------------------------------------------------- fixtures

    @pytest.fixture
    def supervisor(self) -> Iterator[TaskSupervisor]:
        """A started supervisor for this test; stopped (and checked) afterwards."""
        options = dict(self.supervisor_options())
        options.setdefault("queue_policy", "priority")
        options.setdefault("status_store", "memory://")
        options.setdefault("name", f"contract:{type(self).__name__}")
        sup = TaskSupervisor(**options)
        sup.start()
        try:
            self.configure_supervisor(sup)
            yield sup
        finally:
            assert sup.stop(wait=self.wait_timeout, cancel_tasks=True), "tasks still running after the test"

    @pytest.fixture
    def gate(self, supervisor: TaskSupervisor) -> Iterator[Callable[[], Gate]]:
        """``gate()`` -> a new :class:`Gate`; every one is opened and removed after the test."""
        gates: list[Gate] = []

        def make() -> Gate:
            g = Gate()
            gates.append(g)
            return g

        yield make
        for g in gates:
            g.close()

    # ---------------------------------------------------------------- helpers

    def submit(self, supervisor: TaskSupervisor, call: Call, **kwargs: Any) -> Task:
        """``supervisor.submit(func, args, tt=self.tt, **kwargs)`` for an adapter's pair."""
        func, args = call
        return supervisor.submit(func, args, tt=self.tt, **kwargs)

    def wait_all(self, tasks: list[Task]) -> None:
        """Assert that every handle resolves within :attr:`wait_timeout`."""
        not_done = concurrent.futures.wait(tasks, self.wait_timeout).not_done
        assert not not_done, f"{len(not_done)} of {len(tasks)} handles never resolved: {list(not_done)[:5]}"

    def hold_the_slot(self, supervisor: TaskSupervisor, gate: Gate, **pool: int) -> Task:
        """Size the pool (``pool_size=1``, no reserves unless given) and fill it
        with one LOW blocking task, running once this returns."""
        sizes = {"pool_size": 1, "reserve_normal": 0, "reserve_high": 0, **pool}
        supervisor.set_pool(self.tt, **sizes)
        blocker = self.submit(supervisor, self.blocking(gate), priority=TASK_LOW)
        assert blocker.status == 1, "a task submitted to an idle pool did not start"
        assert gate.wait_entered(1, self.wait_timeout), "the blocking task never started waiting"
        return blocker

    # ------------------------------------------------------------------ tests

    def test_result_round_trip(self, supervisor: TaskSupervisor) -> None:
        """A task's return value reaches ``task.result()``; the handle is a Future."""
        for value in ("text", 42, [1, "two", None]):
            task = self.submit(supervisor, self.returning(value))
            assert isinstance(task, concurrent.futures.Future)
            self.check_result(task.result(self.wait_timeout), value)
            assert task.done() and not task.cancelled() and task.exception() is None

    def test_exception_round_trip(self, supervisor: TaskSupervisor) -> None:
        """A task's exception reaches ``task.result()`` with its type and message."""
        task = self.submit(supervisor, self.raising("contract failure 17"))
        with pytest.raises(ValueError, match="contract failure 17"):
            task.result(self.wait_timeout)
        assert isinstance(task.exception(), ValueError)
        assert not task.cancelled()

    def test_many_tasks_resolve_exactly_once(self, supervisor: TaskSupervisor) -> None:
        """Many tasks (some failing) all resolve, each reported finished exactly once."""
        recorder = TaskRecorder()
        supervisor.register_plugin(recorder)
        tasks = [
            self.submit(supervisor, self.raising(f"bad {i}") if i % 10 == 0 else self.returning(i))
            for i in range(self.many)
        ]
        self.wait_all(tasks)
        for i, task in enumerate(tasks):
            if i % 10 == 0:
                assert isinstance(task.exception(), ValueError)
            else:
                self.check_result(task.result(), i)
        assert recorder.wait_finished(tasks, self.wait_timeout)
        # stop(wait=True) returns after every finished observer has run.
        assert supervisor.stop(wait=self.wait_timeout)
        assert sorted(recorder.finished) == sorted(t.id for t in tasks)
        assert set(recorder.finished.values()) == {1}, "a task was reported finished more than once"
        assert sorted(recorder.started) == sorted(t.id for t in tasks), "a task started twice or never"

    def test_priority_order_with_one_slot(self, supervisor: TaskSupervisor, gate: Callable[[], Gate]) -> None:
        """With one slot held, queued LOW, NORMAL and HIGH tasks start HIGH first, then NORMAL, then LOW."""
        recorder = TaskRecorder()
        supervisor.register_plugin(recorder)
        g = gate()
        blocker = self.hold_the_slot(supervisor, g)
        low = self.submit(supervisor, self.returning("low"), priority=TASK_LOW)
        normal = self.submit(supervisor, self.returning("normal"), priority=TASK_NORMAL)
        high = self.submit(supervisor, self.returning("high"), priority=TASK_HIGH)
        assert (low.status, normal.status, high.status) == (0, 0, 0), "a task started while the pool was full"
        g.open()
        self.wait_all([blocker, low, normal, high])
        for task, value in ((low, "low"), (normal, "normal"), (high, "high")):
            self.check_result(task.result(), value)
        assert recorder.started[-3:] == [high.id, normal.id, low.id]
        assert high.time_started is not None and normal.time_started is not None and low.time_started is not None
        assert high.time_started <= normal.time_started <= low.time_started

    def test_reserve_high_admits_high_when_pool_is_full(
        self, supervisor: TaskSupervisor, gate: Callable[[], Gate]
    ) -> None:
        """With the pool full of LOW work, a HIGH task takes the HIGH reserve and runs; LOW and NORMAL wait."""
        g = gate()
        blocker = self.hold_the_slot(supervisor, g, reserve_high=1)
        low = self.submit(supervisor, self.returning("low"), priority=TASK_LOW)
        normal = self.submit(supervisor, self.returning("normal"), priority=TASK_NORMAL)
        high = self.submit(supervisor, self.returning("high"), priority=TASK_HIGH)
        assert high.status in (1, 2), "HIGH did not take its reserve"  # started (or already ended)
        self.check_result(high.result(self.wait_timeout), "high")  # while the blocker still runs
        assert not blocker.done()
        assert (low.status, normal.status) == (0, 0), "LOW or NORMAL took the HIGH reserve"
        g.open()
        self.wait_all([blocker, low, normal])
        self.check_result(normal.result(), "normal")
        self.check_result(low.result(), "low")

    def test_cancel_queued_task(self, supervisor: TaskSupervisor, gate: Callable[[], Gate]) -> None:
        """A queued task cancelled: status -1, ``cancelled()``, never started; the others still run."""
        recorder = TaskRecorder()
        supervisor.register_plugin(recorder)
        g = gate()
        blocker = self.hold_the_slot(supervisor, g)
        queued = self.submit(supervisor, self.returning("never"))
        after = self.submit(supervisor, self.returning("after"))
        assert queued.status == 0
        assert queued.cancel()
        assert queued.cancelled() and queued.done() and queued.status == -1
        with pytest.raises(concurrent.futures.CancelledError):
            queued.result(0)
        assert supervisor.get_task_info(queued) is None
        g.open()
        self.wait_all([blocker, after])
        self.check_result(after.result(), "after")
        assert queued.id not in recorder.started, "a cancelled task was started"
        assert queued.cancel() and queued.cancelled()  # cancelling again: still cancelled

    def test_cancel_running_task(self, supervisor: TaskSupervisor, gate: Callable[[], Gate]) -> None:
        """A running task: ``cancel()`` stops it (the handle ends cancelled) if the task type
        can, else returns ``False`` and the task runs to its end."""
        g = gate()
        running = self.hold_the_slot(supervisor, g)
        if self.can_cancel_running:
            assert running.cancel() is True
            self.wait_all([running])
            assert running.cancelled()
            assert supervisor.get_task_info(running) is None
        else:
            assert running.cancel() is False
            assert not running.cancelled() and not running.done()
            g.open()
            running.result(self.wait_timeout)
        # The slot is free again.
        self.check_result(self.submit(supervisor, self.returning("next")).result(self.wait_timeout), "next")

    def test_timeout(self, supervisor: TaskSupervisor, gate: Callable[[], Gate]) -> None:
        """A task that runs longer than its ``timeout=`` fails with a TimeoutError."""
        if not self.supports_timeout:
            pytest.skip(f"task type {self.tt!r} does not support timeout=")
        g = gate()
        task = self.submit(supervisor, self.blocking(g), timeout=0.5)
        self.wait_all([task])
        assert isinstance(task.exception(), TimeoutError), repr(task.exception())
        assert supervisor.get_task_info(task) is None
        self.check_result(self.submit(supervisor, self.returning("next")).result(self.wait_timeout), "next")

    def test_stop_from_a_callback_does_not_hang(self, supervisor: TaskSupervisor, gate: Callable[[], Gate]) -> None:
        """``stop(wait=False)`` from a task's callback returns while another task runs and
        others wait; every handle still resolves and later submissions are refused."""
        still_running, first = gate(), gate()
        supervisor.set_pool(self.tt, pool_size=2, reserve_normal=0, reserve_high=0)
        blockers = [self.submit(supervisor, self.blocking(g), priority=TASK_LOW) for g in (still_running, first)]
        assert still_running.wait_entered(1, self.wait_timeout) and first.wait_entered(1, self.wait_timeout)
        returned = threading.Event()
        errors: list[BaseException] = []

        def callback(_result: Any) -> None:
            try:
                supervisor.stop(wait=False)
            except BaseException as exc:
                errors.append(exc)
            returned.set()

        task = self.submit(supervisor, self.returning("stop"), callback=callback, priority=TASK_NORMAL)
        queued = [self.submit(supervisor, self.returning(i), priority=TASK_LOW) for i in range(3)]
        assert task.status == 0 and all(q.status == 0 for q in queued)
        first.open()  # the callback task starts in its slot
        self.check_result(task.result(self.wait_timeout), "stop")
        assert returned.is_set(), "the callback did not run before the handle resolved"
        assert not errors, errors
        assert not supervisor.is_active()
        with pytest.raises(SupervisorStoppedError):
            self.submit(supervisor, self.returning("late"))
        self.wait_all(queued)
        # The callback task's slot is refilled before its callback runs: one may have started.
        assert sum(q.cancelled() for q in queued) >= len(queued) - 1, "stop(wait=False) left queued tasks"
        still_running.open()
        self.wait_all(blockers)

    def test_stop_wait_drains_queued_tasks(self, supervisor: TaskSupervisor, gate: Callable[[], Gate]) -> None:
        """``stop(wait=True)`` waits for the running task and runs every queued one (none cancelled)."""
        g = gate()
        blocker = self.hold_the_slot(supervisor, g)
        queued = [self.submit(supervisor, self.returning(i), priority=TASK_NORMAL) for i in range(5)]
        outcome: list[bool] = []
        stopper = threading.Thread(target=lambda: outcome.append(supervisor.stop(wait=True)), daemon=True)
        stopper.start()
        stopper.join(0.2)
        assert stopper.is_alive(), "stop(wait=True) returned while a task was still running"
        g.open()
        stopper.join(self.wait_timeout)
        assert not stopper.is_alive(), "stop(wait=True) hung"
        assert outcome == [True]
        assert blocker.done() and not blocker.cancelled()
        blocker.result(0)
        for i, task in enumerate(queued):
            assert task.done() and not task.cancelled()
            self.check_result(task.result(0), i)

    def test_submit_after_stop_raises(self, supervisor: TaskSupervisor) -> None:
        """Once stopped, ``submit`` raises :class:`~atasker.SupervisorStoppedError`."""
        self.check_result(self.submit(supervisor, self.returning(1)).result(self.wait_timeout), 1)
        assert supervisor.stop(wait=self.wait_timeout)
        with pytest.raises(SupervisorStoppedError):
            self.submit(supervisor, self.returning(2))

    def test_task_info_while_queued_and_running(self, supervisor: TaskSupervisor, gate: Callable[[], Gate]) -> None:
        """``get_task_info`` gives the record (status 1 running, 0 queued) and ``None`` once done."""
        g = gate()
        running = self.hold_the_slot(supervisor, g)
        queued = self.submit(supervisor, self.returning("q"), priority=TASK_HIGH)
        info = supervisor.get_task_info(running)
        assert info is not None
        assert (info.id, info.tt, info.status, info.priority) == (running.id, self.tt, 1, TASK_LOW)
        assert info.time_started is not None
        by_id = supervisor.get_task_info(queued.id)
        assert by_id is not None
        assert (by_id.id, by_id.tt, by_id.status, by_id.priority) == (queued.id, self.tt, 0, TASK_HIGH)
        assert by_id.time_queued is not None and by_id.time_started is None
        g.open()
        running.result(self.wait_timeout)
        self.check_result(queued.result(self.wait_timeout), "q")
        assert supervisor.get_task_info(running) is None
        assert supervisor.get_task_info(queued.id) is None

    def test_keeps_serving_after_a_task_fails(self, supervisor: TaskSupervisor) -> None:
        """A failed task frees its slot: later tasks on a one-slot pool still run."""
        supervisor.set_pool(self.tt, pool_size=1, reserve_normal=0, reserve_high=0)
        for round_ in range(3):
            failed = self.submit(supervisor, self.raising(f"round {round_}"))
            with pytest.raises(ValueError, match=f"round {round_}"):
                failed.result(self.wait_timeout)
            self.check_result(self.submit(supervisor, self.returning(round_)).result(self.wait_timeout), round_)
