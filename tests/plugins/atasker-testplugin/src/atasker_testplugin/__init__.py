"""Test plugin: task type ``"testecho"`` (one thread per task) and a counter.

Installed for real by ``make venv`` so that tests load it through its entry
point, the way users' plugins load.
"""

from __future__ import annotations

import threading

from atasker import TaskType, hookimpl

#: Tasks finished, seen through ``atasker_task_finished``.
finished_names: list[str] = []


class EchoExecutor:
    """Runs each task in a thread of its own; reports through task_done."""

    def __init__(self, supervisor, pool):
        self.supervisor = supervisor

    def validate(self, task):
        pass

    def capacity(self):
        return None

    def resize(self, pool):
        pass

    def start(self, task):
        threading.Thread(target=self._run, args=(task,), daemon=True).start()

    def _run(self, task):
        try:
            result = ("echo", task.func(*task.args, **task.kwargs))
        except Exception as exc:
            self.supervisor.task_done(task, exception=exc)
        else:
            self.supervisor.task_done(task, result=result)

    def cancel(self, task):
        return False

    def shutdown(self, wait=True):
        pass


@hookimpl
def atasker_register_task_types(register):
    register(TaskType("testecho", EchoExecutor, pool_size=2, reserve_normal=0, reserve_high=0, doc="test echo"))


@hookimpl
def atasker_task_finished(task):
    if task.tt == "testecho":
        finished_names.append(task.name)
