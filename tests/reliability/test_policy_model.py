"""The default queue policy against a small reference model (hypothesis).

Tasks run on a manual task type: ``start`` only records, and the test
finishes tasks itself, so each step is deterministic and needs no threads.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from atasker import TaskSupervisor, TaskType, hookimpl
from atasker.core.task import priority_band


class ManualExecutor:
    def __init__(self, supervisor, pool):
        self.started = []

    def validate(self, task):
        pass

    def capacity(self):
        return None

    def resize(self, pool):
        pass

    def start(self, task):
        self.started.append(task)

    def cancel(self, task):
        return False

    def shutdown(self, wait=True):
        pass


class ManualPlugin:
    __name__ = "manual"

    @hookimpl
    def atasker_register_task_types(self, register):
        register(TaskType("manual", ManualExecutor))


class Model:
    """What the docs promise, written as plainly as possible."""

    def __init__(self, size, normal, high):
        self.sizes = (size, normal, high)
        self.waiting = []  # (priority, seq)
        self.running = set()
        self.seq = 0

    def limit(self, priority):
        size, normal, high = self.sizes
        band = priority_band(priority)
        if band == 0 or size == 0:
            return math.inf
        return {50: size + normal + high, 100: size + normal, 200: size}[band]

    def admit(self):
        while self.waiting:
            head = min(self.waiting)
            if len(self.running) >= self.limit(head[0]):
                return
            self.waiting.remove(head)
            self.running.add(head[1])

    def submit(self, priority):
        self.waiting.append((priority, self.seq))
        self.seq += 1
        self.admit()

    def finish(self, seq):
        self.running.discard(seq)
        self.admit()

    def resize(self, sizes):
        self.sizes = sizes
        self.admit()


sizes = st.tuples(st.integers(0, 4), st.integers(0, 3), st.integers(0, 3))
events = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.sampled_from([0, 10, 50, 60, 100, 150, 200])),
        st.tuples(st.just("finish"), st.integers(0, 1000)),
        st.tuples(st.just("resize"), sizes),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(initial=sizes, events=events)
def test_started_tasks_match_the_model(initial, events):
    sup = TaskSupervisor(plugins=[ManualPlugin()], autoload=False, name="model")
    sup.set_pool("manual", *initial)
    sup.start()
    try:
        model = Model(*initial)
        tasks = []
        for kind, arg in events:
            if kind == "submit":
                tasks.append(sup.submit(int, tt="manual", priority=arg))
                model.submit(arg)
            elif kind == "finish":
                running = sorted(model.running)
                if not running:
                    continue
                seq = running[arg % len(running)]
                sup.task_done(tasks[seq], result=None)
                model.finish(seq)
            else:
                sup.set_pool("manual", *arg)
                model.resize(arg)
            started = {i for i, t in enumerate(tasks) if t.status == 1 and not t.done()}
            assert started == model.running, (kind, arg)
    finally:
        for task in tasks:
            task.cancel()  # the queued ones
        for task in tasks:
            if task.status == 1 and not task.done():
                sup.task_done(task, result=None)
        assert sup.stop(wait=5)
