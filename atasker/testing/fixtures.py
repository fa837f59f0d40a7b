"""pytest plugin shipped with atasker (entry point ``pytest11``).

Fixtures:

* ``atasker_supervisor`` -- a started :class:`~atasker.TaskSupervisor` of
  its own for each test, configured by the ``atasker`` marker::

      @pytest.mark.atasker(pool_size=2, reserve_normal=0, plugins=[MyPlugin()])
      def test_something(atasker_supervisor):
          assert atasker_supervisor.submit(pow, (2, 3)).result(5) == 8

* ``atasker_supervisor_factory`` -- ``make(**kwargs)`` builds (and starts,
  unless ``start=False``) as many supervisors as a test needs.

After the test each supervisor is stopped.  A task still queued or running
when the test ends is a leak: the test fails, naming the tasks (they are
cancelled or waited for first, so nothing outlives the test).  Tasks get
``atasker_leak_timeout`` seconds (ini option, default 0) to finish before
they count as leaked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from atasker.core.supervisor import TaskSupervisor

__all__ = ["atasker_supervisor", "atasker_supervisor_factory"]

#: How long teardown waits for leaked tasks before giving up on them.
TEARDOWN_WAIT = 10.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "atasker_leak_timeout",
        "seconds tasks may take to finish after a test before they count as leaked",
        default="0",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "atasker(**options): TaskSupervisor options for the atasker_supervisor fixture")


def _wait_settled(sup: TaskSupervisor, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for task in sup.get_tasks():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            task.exception(remaining)
        except Exception:  # timeout or cancelled: it counts as a leak below
            return


@pytest.fixture
def atasker_supervisor_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., TaskSupervisor]]:
    """Factory of supervisors that are stopped and leak-checked after the test."""
    created: list[TaskSupervisor] = []

    def make(*, start: bool = True, **kwargs: Any) -> TaskSupervisor:
        kwargs.setdefault("name", f"test:{request.node.name}")
        sup = TaskSupervisor(**kwargs)
        if start:
            sup.start()
        created.append(sup)
        return sup

    yield make
    grace = float(request.config.getini("atasker_leak_timeout") or 0)
    problems = []
    for sup in created:
        if grace:
            _wait_settled(sup, grace)
        leaked = sup.get_tasks()
        if leaked:
            names = ", ".join(f"{t.id} {t.name!r} ({'running' if t.status == 1 else 'queued'})" for t in leaked[:10])
            problems.append(f"{sup.name}: {len(leaked)} task(s) still queued or running: {names}")
        if not sup.stop(wait=TEARDOWN_WAIT, cancel_tasks=True):
            problems.append(f"{sup.name}: tasks still running {TEARDOWN_WAIT} s after stop()")
    if problems:
        pytest.fail("atasker: the test leaked tasks\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def atasker_supervisor(
    request: pytest.FixtureRequest, atasker_supervisor_factory: Callable[..., TaskSupervisor]
) -> TaskSupervisor:
    """A started supervisor for this test, configured by ``@pytest.mark.atasker(...)``."""
    marker = request.node.get_closest_marker("atasker")
    options = dict(marker.kwargs) if marker else {}
    return atasker_supervisor_factory(**options)
