"""The executor contract on task type ``"dask"``, on one real ``LocalCluster`` per module.

Two single-thread worker processes, as ``tests/test_dask.py`` starts them;
each test's supervisor gets its own client to that cluster.  Blocking tasks
wait on FIFO gates in the worker processes (same host).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip(
    "atasker_dask", reason="needs the atasker-dask plugin (and dask distributed): pip install -e plugins/atasker-dask"
)

import atasker_dask

from atasker import TaskSupervisor
from atasker.testing import ExecutorContract

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX FIFOs and processes")


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[Any]:
    """The module's cluster: two worker processes of one thread each."""
    with atasker_dask.local_cluster(n_workers=2, threads_per_worker=1) as cluster:
        yield cluster


class TestDaskExecutor(ExecutorContract):
    """A running dask task is cancelled at once (its function runs on to its end on the worker)."""

    tt = atasker_dask.TT_DASK
    can_cancel_running = True
    supports_timeout = True

    @pytest.fixture(autouse=True)
    def _use_cluster(self, dask_cluster: Any) -> None:
        self.address = dask_cluster.scheduler_address

    def supervisor_options(self) -> dict[str, Any]:
        return {"autoload": False, "plugins": [atasker_dask]}

    def configure_supervisor(self, supervisor: TaskSupervisor) -> None:
        atasker_dask.configure(supervisor, address=self.address, connect_timeout=self.wait_timeout)
