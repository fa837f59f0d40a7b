"""What every status store must do, as a pytest base class.

::

    from atasker.testing import StatusStoreContract
    import my_store_plugin

    class TestMyStore(StatusStoreContract):
        def store_url(self, tmp_path):
            return f"mystore://{tmp_path / 'tasks'}"

        def supervisor_options(self):
            return {"autoload": False, "plugins": [my_store_plugin]}

The store is exercised through a real supervisor (thread tasks):
``get_task_info`` must give the live record of a queued or running task and
``None`` once it ended (completed, failed or cancelled), from any thread,
under load, until the supervisor stops and closes the store.  A store that
keeps history can expose it to the contract through :meth:`history`, which
then checks every final record was written by the time ``stop()`` returned.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from atasker import TASK_HIGH, TASK_LOW, TASK_NORMAL, Task, TaskSupervisor

from .tasks import Gate, raise_value_error, return_value, wait_gate

__all__ = ["StatusStoreContract"]


class StatusStoreContract:
    """Behavioural suite for a status store: subclass it in a test module.

    Override :meth:`store_url` (required) and :meth:`supervisor_options`
    (the plugin providing the store); optionally :meth:`history`.
    """

    #: Seconds any single wait may take before the test fails.
    wait_timeout: float = 30.0
    #: Tasks submitted by the load test.
    many: int = 2000

    # ------------------------------------------------------------ to override

    def store_url(self, tmp_path: Path) -> str:
        """The ``status_store=`` URL to test; *tmp_path* is the test's own directory."""
        raise NotImplementedError("set store_url() in the subclass")

    def supervisor_options(self) -> dict[str, Any]:
        """Other keyword arguments for ``TaskSupervisor(...)`` (plugins to register, ...)."""
        return {"autoload": False}

    def history(self, url: str, tmp_path: Path) -> dict[int, str] | None:
        """After the supervisor stopped: ``{task_id: outcome}`` of what the store
        kept (``"completed"``, ``"failed"``, ``"cancelled"``), or ``None`` for a
        store without history (the default)."""
        return None

    # --------------------------------------------------------------- fixtures

    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        """This test's store URL."""
        return self.store_url(tmp_path)

    @pytest.fixture
    def make_supervisor(self, url: str) -> Iterator[Callable[..., TaskSupervisor]]:
        """``make(**kwargs)`` -> a started supervisor on the store; all are stopped after the test."""
        created: list[TaskSupervisor] = []

        def make(**kwargs: Any) -> TaskSupervisor:
            options = {**self.supervisor_options(), **kwargs}
            options.setdefault("status_store", url)
            options.setdefault("name", f"contract:{type(self).__name__}")
            sup = TaskSupervisor(**options)
            sup.start()
            created.append(sup)
            return sup

        yield make
        for sup in created:
            assert sup.stop(wait=self.wait_timeout, cancel_tasks=True), "tasks still running after the test"

    @pytest.fixture
    def supervisor(self, make_supervisor: Callable[..., TaskSupervisor]) -> TaskSupervisor:
        """A started supervisor whose thread pool has 1 slot and no reserves."""
        return make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)

    @pytest.fixture
    def gate(self, supervisor: TaskSupervisor) -> Iterator[Gate]:
        """A :class:`Gate`, opened and removed after the test."""
        with Gate() as g:
            yield g

    # ---------------------------------------------------------------- helpers

    def check_record(self, record: Task | None, task: Task, status: int) -> None:
        """Assert that *record* is the live record of *task* with *status*."""
        assert record is not None, f"no record for task {task.id} (status {status} expected)"
        assert (record.id, record.name, record.tt, record.priority) == (task.id, task.name, task.tt, task.priority)
        assert record.status == status
        assert record.time_queued is not None
        assert (record.time_started is not None) == (status == 1)

    def wait_all(self, tasks: list[Task]) -> None:
        """Assert that every handle resolves within :attr:`wait_timeout`."""
        not_done = concurrent.futures.wait(tasks, self.wait_timeout).not_done
        assert not not_done, f"{len(not_done)} handles never resolved"

    # ------------------------------------------------------------------ tests

    def test_store_is_selected_by_url(self, supervisor: TaskSupervisor) -> None:
        """The supervisor uses a store created from the URL, with the protocol's methods."""
        store = supervisor.status_store
        assert store is not None
        for method in ("task_queued", "task_started", "task_finished", "get", "close"):
            assert callable(getattr(store, method, None)), method

    def test_queued_started_finished(self, supervisor: TaskSupervisor, gate: Gate) -> None:
        """Records go queued (status 0) -> started (status 1) -> gone (``None``) once done."""
        running = supervisor.submit(wait_gate, (gate, "r"), priority=TASK_LOW, name="running")
        assert gate.wait_entered(1, self.wait_timeout)
        queued = supervisor.submit(return_value, ("q",), priority=TASK_HIGH, name="queued")
        self.check_record(supervisor.get_task_info(running), running, 1)
        self.check_record(supervisor.get_task_info(queued), queued, 0)
        self.check_record(supervisor.get_task_info(queued.id), queued, 0)  # by id as well
        store = supervisor.status_store
        assert store is not None
        self.check_record(store.get(running.id), running, 1)
        gate.open()
        assert running.result(self.wait_timeout) == "r"
        assert queued.result(self.wait_timeout) == "q"
        # The record is dropped before the handle resolves.
        assert supervisor.get_task_info(running) is None
        assert supervisor.get_task_info(queued.id) is None
        assert store.get(queued.id) is None

    def test_failed_and_cancelled_tasks_leave_no_live_record(self, supervisor: TaskSupervisor, gate: Gate) -> None:
        """A failed task and a cancelled queued task: ``get_task_info`` is ``None`` once they ended."""
        running = supervisor.submit(wait_gate, (gate,))
        cancelled = supervisor.submit(return_value, (1,))
        self.check_record(supervisor.get_task_info(cancelled), cancelled, 0)
        assert cancelled.cancel()
        assert supervisor.get_task_info(cancelled) is None
        gate.open()
        running.result(self.wait_timeout)
        failed = supervisor.submit(raise_value_error, ("store contract",))
        with pytest.raises(ValueError, match="store contract"):
            failed.result(self.wait_timeout)
        assert supervisor.get_task_info(failed) is None

    def test_unknown_ids(self, supervisor: TaskSupervisor) -> None:
        """Ids the store never saw give ``None``."""
        assert supervisor.get_task_info(10**12) is None
        store = supervisor.status_store
        assert store is not None
        assert store.get(10**12 + 1) is None

    def test_records_readable_from_other_threads(self, supervisor: TaskSupervisor, gate: Gate) -> None:
        """Records written by the submitting thread are read correctly from other threads."""
        running = supervisor.submit(wait_gate, (gate,), priority=TASK_LOW)
        queued = [supervisor.submit(return_value, (i,), priority=TASK_NORMAL) for i in range(20)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            records = list(pool.map(supervisor.get_task_info, queued))
        for record, task in zip(records, queued, strict=True):
            self.check_record(record, task, 0)
        gate.open()
        self.wait_all([running, *queued])
        assert [t.result() for t in queued] == list(range(20))
        assert all(supervisor.get_task_info(t) is None for t in queued)

    def test_many_tasks_quickly(self, make_supervisor: Callable[..., TaskSupervisor], url: str, tmp_path: Path) -> None:
        """Thousands of tasks submitted from several threads: every record is dropped once done,
        and a store with history has every final record when ``stop()`` returns."""
        sup = make_supervisor(pool_size=4)
        tasks: list[Task] = []
        lock = threading.Lock()

        def submit_some(offset: int) -> None:
            mine = [
                sup.submit(raise_value_error if i % 50 == 0 else return_value, (str(i),), priority=TASK_NORMAL)
                for i in range(offset, self.many, 4)
            ]
            with lock:
                tasks.extend(mine)

        threads = [threading.Thread(target=submit_some, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.wait_timeout)
        assert len(tasks) == self.many
        self.wait_all(tasks)
        assert all(sup.get_task_info(t) is None for t in tasks)
        assert sup.stop(wait=self.wait_timeout)
        history = self.history(url, tmp_path)
        if history is not None:
            for task in tasks:
                expected = "failed" if task.exception() is not None else "completed"
                assert history.get(task.id) == expected, (task.id, history.get(task.id))

    def test_stop_closes_the_store_with_every_final_record(
        self, make_supervisor: Callable[..., TaskSupervisor], url: str, tmp_path: Path
    ) -> None:
        """``stop()`` closes the store after the last record (cancelled ones included);
        closing again is harmless, and a new supervisor can open the same URL."""
        sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
        with Gate() as g:
            running = sup.submit(wait_gate, (g, "r"))
            assert g.wait_entered(1, self.wait_timeout)
            queued = [sup.submit(return_value, (i,)) for i in range(3)]
            high = sup.submit(return_value, ("h",), priority=TASK_HIGH)
            stopper = threading.Thread(target=sup.stop, kwargs={"wait": self.wait_timeout, "cancel_tasks": True})
            stopper.start()
            self.wait_all(queued)  # cancel_tasks: cancelled at once, the running task goes on
            assert all(t.cancelled() for t in queued)
            g.open()
            stopper.join(self.wait_timeout)
            assert not stopper.is_alive(), "stop() hung"
        assert running.result(0) == "r"
        assert high.cancelled()
        store = sup.status_store
        assert store is not None
        store.close()  # idempotent
        history = self.history(url, tmp_path)
        if history is not None:
            assert history.get(running.id) == "completed"
            for task in [*queued, high]:
                assert history.get(task.id) == "cancelled", (task.id, history.get(task.id))
        again = make_supervisor()
        task = again.submit(return_value, (5,))
        assert task.result(self.wait_timeout) == 5
        assert again.get_task_info(task) is None
        assert again.get_task_info(running.id) is None  # another run's task is not live here
        assert again.stop(wait=self.wait_timeout)
