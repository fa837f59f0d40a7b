"""Shared fixtures: a fresh supervisor per test, plugin autoload off.

Supervisors come from atasker's own pytest plugin (``atasker.testing.fixtures``,
loaded through its ``pytest11`` entry point), which stops each one after the
test and fails the test if it left tasks queued or running.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
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
        "ATASKER_TRACE",
        "ATASKER_DASK_ADDRESS",
        "ATASKER_UVLOOP",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_supervisor(atasker_supervisor_factory: Callable[..., TaskSupervisor]) -> Callable[..., TaskSupervisor]:
    """Factory of started supervisors (the pytest plugin's, leak-checked)."""
    return atasker_supervisor_factory


@pytest.fixture
def supervisor(make_supervisor: Callable[..., Any]) -> TaskSupervisor:
    """A started supervisor with a thread pool of 4 and reserves 2/2."""
    return make_supervisor(pool_size=4, reserve_normal=2, reserve_high=2)


class _CollectWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def no_asyncio_complaints():
    """Fail on what asyncio logs instead of warning: "Task was destroyed but
    it is pending", "exception was never retrieved", callback errors."""
    handler = _CollectWarnings()
    logging.getLogger("asyncio").addHandler(handler)
    yield
    logging.getLogger("asyncio").removeHandler(handler)
    assert not handler.records, [r.getMessage() for r in handler.records]


class Sleeper:
    """A coroutine task that sleeps until it is cancelled: submit ``sleeper.run``.

    ``started`` is set once it runs, ``saw_cancel`` when the cancellation
    reaches it (before the coroutine ends, so before its handle resolves).
    """

    def __init__(self) -> None:
        self.started = threading.Event()
        self.saw_cancel = threading.Event()

    async def run(self) -> None:
        self.started.set()
        try:
            await asyncio.sleep(WAIT * 10)
        except asyncio.CancelledError:
            self.saw_cancel.set()
            raise
