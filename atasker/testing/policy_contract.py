"""What every queue policy must guarantee, as a pytest base class.

::

    from atasker.testing import QueuePolicyContract
    import my_policy_plugin

    class TestMyPolicy(QueuePolicyContract):
        policy_name = "mine"
        strict_priority_order = False  # it reorders within a priority

        def supervisor_options(self):
            return {"autoload": False, "plugins": [my_policy_plugin]}

The policy runs inside a real supervisor, on a task type of the contract's
own whose executor only records what it is given: the test finishes tasks
itself, so every step is deterministic and needs no threads.  Hypothesis
drives random submit / finish / cancel / resize sequences; after each step
the invariants below are checked against what was observed.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atasker import (
    TASK_CRITICAL,
    TASK_HIGH,
    TASK_LOW,
    TASK_NORMAL,
    Pool,
    SupervisorAPI,
    Task,
    TaskSupervisor,
    TaskType,
    hookimpl,
    priority_band,
)

__all__ = ["MANUAL_TT", "ManualExecutor", "QueuePolicyContract", "band_limit"]

#: The contract's task type: its executor starts nothing by itself.
MANUAL_TT = "contract-manual"

Sizes = tuple[int, int, int]


def band_limit(sizes: Sizes, priority: int) -> float:
    """How many tasks may run in all when a task of *priority* starts (unlimited capacity)."""
    size, normal, high = sizes
    band = priority_band(priority)
    if band == TASK_CRITICAL or size == 0:
        return math.inf
    return {TASK_HIGH: size + normal + high, TASK_NORMAL: size + normal, TASK_LOW: size}[band]


class ManualExecutor:
    """Records the tasks it is asked to start; the test reports their ends."""

    def __init__(self, supervisor: SupervisorAPI, pool: Pool) -> None:
        #: Every task handed to :meth:`start`, in order.
        self.started: list[Task] = []

    def validate(self, task: Task) -> None:
        pass

    def capacity(self) -> int | None:
        return None

    def resize(self, pool: Pool) -> None:
        pass

    def start(self, task: Task) -> None:
        self.started.append(task)

    def cancel(self, task: Task) -> bool:
        return False

    def shutdown(self, wait: bool = True) -> None:
        pass


class _ManualPlugin:
    __name__ = "atasker-contract-manual"

    @hookimpl
    def atasker_register_task_types(self, register: Any) -> None:
        register(TaskType(MANUAL_TT, ManualExecutor, pool_size=1, reserve_normal=0, reserve_high=0))


class _StrictModel:
    """The built-in order: strict priority, FIFO within a priority, head blocks."""

    def __init__(self, sizes: Sizes) -> None:
        self.sizes = sizes
        self.waiting: list[tuple[int, int]] = []  # (priority, index)
        self.running: set[int] = set()

    def admit(self) -> None:
        while self.waiting:
            head = min(self.waiting)
            if len(self.running) >= band_limit(self.sizes, head[0]):
                return
            self.waiting.remove(head)
            self.running.add(head[1])


PRIORITIES = [TASK_CRITICAL, 10, TASK_HIGH, 60, TASK_NORMAL, 150, TASK_LOW]
NAMES = ["a", "b", "c"]
SIZES = st.tuples(st.integers(0, 4), st.integers(0, 3), st.integers(0, 3))
EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.tuples(st.sampled_from(PRIORITIES), st.sampled_from(NAMES))),
        st.tuples(st.just("finish"), st.integers(0, 1000)),
        st.tuples(st.just("cancel"), st.integers(0, 1000)),
        st.tuples(st.just("resize"), SIZES),
    ),
    max_size=60,
)


class QueuePolicyContract:
    """Behavioural suite for a queue policy: subclass it in a test module.

    Set :attr:`policy_name` and override :meth:`supervisor_options` to
    register the plugin that provides it.  Invariants checked for any policy:

    * a task starts only if the pool has room for its band when it starts
      (``running < limit(band)``, the reserves of :class:`~atasker.Pool`);
    * the policy is work-conserving: after each step no waiting task could
      start;
    * every task starts at most once, a cancelled one never, and once the
      pool is made unlimited every task still waiting starts;
    * ``len(policy)``, ``waiting()`` and ``tasks()`` (through
      ``get_info()`` and ``get_tasks()``) agree with what is waiting.

    With :attr:`strict_priority_order` the exact order of the built-in
    ``"priority"`` policy is required as well: most urgent first, FIFO within
    a priority, and a waiting task that may not start blocks those behind it.
    """

    #: The ``queue_policy=`` name under test.
    policy_name: str = "priority"
    #: Require strict priority order and FIFO within a priority.
    strict_priority_order: bool = False
    #: Hypothesis examples per property.
    max_examples: int = 300

    def supervisor_options(self) -> dict[str, Any]:
        """Keyword arguments for ``TaskSupervisor(...)`` (the plugin providing the policy)."""
        return {"autoload": False}

    # ---------------------------------------------------------------- helpers

    def make_supervisor(self, sizes: Sizes) -> tuple[TaskSupervisor, ManualExecutor]:
        """A started supervisor using the policy, with the manual task type sized *sizes*."""
        options = dict(self.supervisor_options())
        options["plugins"] = [*options.get("plugins", ()), _ManualPlugin()]
        options["queue_policy"] = self.policy_name
        options.setdefault("name", f"contract:{type(self).__name__}")
        sup = TaskSupervisor(**options)
        sup.set_pool(MANUAL_TT, *sizes)
        sup.start()
        executor = sup.executor(MANUAL_TT)
        assert isinstance(executor, ManualExecutor)
        return sup, executor

    def run_events(self, initial: Sizes, events: list[tuple[str, Any]]) -> None:
        """Apply *events* one by one, checking every invariant after each."""
        sup, executor = self.make_supervisor(initial)
        sizes = initial
        tasks: list[Task] = []
        index: dict[int, int] = {}  # task id -> position in tasks
        running: list[int] = []  # positions, in start order
        waiting: list[int] = []  # positions, in submission order
        cancelled: set[int] = set()
        seen = 0
        model = _StrictModel(initial) if self.strict_priority_order else None
        try:
            for kind, arg in events:
                base = len(running)
                if kind == "submit":
                    priority, name = arg
                    task = sup.submit(int, tt=MANUAL_TT, priority=priority, name=name)
                    index[task.id] = len(tasks)
                    waiting.append(len(tasks))
                    tasks.append(task)
                    if model is not None:
                        model.waiting.append((priority, index[task.id]))
                        model.admit()
                elif kind == "finish":
                    if not running:
                        continue
                    pos = running.pop(arg % len(running))
                    base -= 1
                    sup.task_done(tasks[pos], result=None)
                    assert tasks[pos].done()
                    if model is not None:
                        model.running.discard(pos)
                        model.admit()
                elif kind == "cancel":
                    if not waiting:
                        continue
                    pos = waiting[arg % len(waiting)]
                    assert tasks[pos].cancel(), "a waiting task could not be cancelled"
                    assert tasks[pos].status == -1
                    waiting.remove(pos)
                    cancelled.add(pos)
                    if model is not None:
                        model.waiting = [w for w in model.waiting if w[1] != pos]
                        model.admit()
                else:
                    sizes = arg
                    sup.set_pool(MANUAL_TT, *sizes)
                    if model is not None:
                        model.sizes = sizes
                        model.admit()
                # -- what started during this step, in start order
                new = executor.started[seen:]
                seen = len(executor.started)
                for k, task in enumerate(new):
                    pos = index[task.id]
                    assert pos not in cancelled, f"cancelled task {pos} started ({kind} {arg})"
                    assert pos in waiting, f"task {pos} started twice or was never waiting ({kind} {arg})"
                    limit = band_limit(sizes, task.priority)
                    assert base + k < limit, (
                        f"task {pos} (priority {task.priority}) started with {base + k} running, "
                        f"limit {limit} for sizes {sizes} ({kind} {arg})"
                    )
                    waiting.remove(pos)
                    running.append(pos)
                self.check_state(sup, sizes, tasks, running, waiting, f"{kind} {arg}")
                if model is not None:
                    assert set(running) == model.running, f"started {sorted(running)}, expected {model.running}"
            # -- drain: with an unlimited pool everything still waiting starts
            sup.set_pool(MANUAL_TT, 0, 0, 0)
            new = executor.started[seen:]
            seen = len(executor.started)
            assert sorted(index[t.id] for t in new) == sorted(waiting), "an unlimited pool left tasks waiting"
            running += [index[t.id] for t in new]
            waiting = []
            self.check_state(sup, (0, 0, 0), tasks, running, waiting, "drain")
            for pos in running:
                sup.task_done(tasks[pos], result=None)
            running = []
            counts = Counter(t.id for t in executor.started)
            for pos, task in enumerate(tasks):
                expected = 0 if pos in cancelled else 1
                assert counts[task.id] == expected, f"task {pos} started {counts[task.id]} times"
                assert task.done()
            assert sup.stop(wait=5)
        finally:
            if sup.is_active():  # a failed check: leave nothing behind
                for task in tasks:
                    task.cancel()
                for pos in running:
                    if not tasks[pos].done():
                        sup.task_done(tasks[pos], result=None)
                for task in executor.started[seen:]:
                    if not task.done():
                        sup.task_done(task, result=None)
                sup.stop(wait=False)

    def check_state(
        self,
        sup: TaskSupervisor,
        sizes: Sizes,
        tasks: list[Task],
        running: list[int],
        waiting: list[int],
        step: str,
    ) -> None:
        """Counts, snapshots and work conservation after a step."""
        info = sup.get_info()["task_types"][MANUAL_TT]
        assert info["running"] == len(running), step
        assert info["waiting_total"] == len(waiting), f"len(policy) is {info['waiting_total']}, {len(waiting)} wait"
        expected = Counter(tasks[p].priority for p in waiting)
        assert info["waiting"] == dict(expected), f"waiting() {info['waiting']} != {dict(expected)} ({step})"
        live = {t.id for t in sup.get_tasks()}
        assert live == {tasks[p].id for p in running + waiting}, f"tasks() disagrees ({step})"
        for pos in waiting:
            assert len(running) >= band_limit(sizes, tasks[pos].priority), (
                f"not work-conserving: task {pos} (priority {tasks[pos].priority}) could start with "
                f"{len(running)} running, sizes {sizes} ({step})"
            )
        for pos in waiting:
            assert tasks[pos].status == 0 and not tasks[pos].done()

    # ------------------------------------------------------------------ tests

    def test_invariants_hold_for_random_sequences(self) -> None:
        """Random submit / finish / cancel / resize sequences keep every invariant."""

        @settings(max_examples=self.max_examples, deadline=None)
        @given(initial=SIZES, events=EVENTS)
        def check(initial: Sizes, events: list[tuple[str, Any]]) -> None:
            self.run_events(initial, events)

        check()

    def test_reserves_admit_more_urgent_bands(self) -> None:
        """A pool full of LOW work still starts NORMAL, HIGH and CRITICAL tasks within their reserves."""
        events: list[tuple[str, Any]] = [("submit", (TASK_LOW, "a")) for _ in range(3)]
        events += [("submit", (TASK_NORMAL, "b")) for _ in range(2)]
        events += [("submit", (TASK_HIGH, "c")) for _ in range(2)]
        events += [("submit", (TASK_CRITICAL, "a"))]
        events += [("finish", 0), ("finish", 0), ("cancel", 0), ("finish", 0)]
        self.run_events((1, 1, 1), events)

    def test_cancelled_waiting_tasks_never_start(self) -> None:
        """Waiting tasks cancelled at the head, middle and tail of the queue are skipped."""
        events: list[tuple[str, Any]] = [("submit", (TASK_NORMAL, "a"))]
        events += [("submit", (p, n)) for p in (TASK_HIGH, TASK_NORMAL, TASK_LOW) for n in NAMES]
        events += [("cancel", 0), ("cancel", 3), ("cancel", 1000)]
        events += [("finish", 0)] * 8
        self.run_events((1, 0, 0), events)

    def test_strict_priority_then_fifo(self) -> None:
        """(strict policies) Most urgent first, FIFO within a priority, names ignored."""
        if not self.strict_priority_order:
            pytest.skip(f"policy {self.policy_name!r} does not promise strict order")
        sup, executor = self.make_supervisor((1, 0, 0))
        try:
            blocker = sup.submit(int, tt=MANUAL_TT, priority=TASK_LOW, name="blocker")
            order = [(TASK_LOW, "a"), (TASK_NORMAL, "a"), (TASK_LOW, "b"), (TASK_HIGH, "b"), (TASK_NORMAL, "b")]
            queued = [sup.submit(int, tt=MANUAL_TT, priority=p, name=n) for p, n in order]
            sup.task_done(blocker, result=None)
            started: list[int] = []
            while len(executor.started) > len(started) + 1:
                task = executor.started[len(started) + 1]
                started.append(queued.index(task))
                sup.task_done(task, result=None)
            assert started == [3, 1, 4, 0, 2]
        finally:
            assert sup.stop(wait=5, cancel_tasks=True)
