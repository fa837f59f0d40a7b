"""Shared fixtures: a fresh supervisor per test, plugin autoload off."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from atasker import TaskSupervisor

#: Generous bound for waits on events/handles; a loaded 2-core CI machine is slow.
WAIT = 10.0


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the plugins they ask for, whatever is installed."""
    monkeypatch.setenv("ATASKER_DISABLE_PLUGIN_AUTOLOAD", "1")
    for name in (
        "ATASKER_PLUGINS",
        "ATASKER_BLOCK_PLUGINS",
        "ATASKER_PROVIDERS",
        "ATASKER_QUEUE_POLICY",
        "ATASKER_STATUS_STORE",
        "ATASKER_DEBUG_PLUGINS",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_supervisor() -> Iterator[Callable[..., TaskSupervisor]]:
    """Factory of started supervisors, all stopped (and checked) at teardown."""
    created: list[TaskSupervisor] = []

    def make(*, start: bool = True, **kwargs: Any) -> TaskSupervisor:
        sup = TaskSupervisor(**kwargs)
        if start:
            sup.start()
        created.append(sup)
        return sup

    yield make
    for sup in created:
        assert sup.stop(wait=WAIT, cancel_tasks=True), f"{sup!r} had tasks still running at teardown"


@pytest.fixture
def supervisor(make_supervisor: Callable[..., TaskSupervisor]) -> TaskSupervisor:
    """A started supervisor with a thread pool of 4 and reserves 2/2."""
    return make_supervisor(pool_size=4, reserve_normal=2, reserve_high=2)
