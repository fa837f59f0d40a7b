"""Durations on the dask task type: huge ones work, bad ones are refused
before anything changes, on one real ``LocalCluster`` per module.

Every wait the plugin makes goes through the core's validation and is
clamped to what ``threading`` can wait for: ``timeout=1e10`` once killed
the thread that reports every dask outcome.
"""

from __future__ import annotations

import math
import operator
import sys
from collections.abc import Iterator
from typing import Any

import atasker_dask
import pytest
from atasker_dask import TT_DASK

from atasker import TaskSupervisor

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

WAIT = 30.0
BAD = [math.inf, -math.inf, math.nan, "5", True, -1, object()]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with atasker_dask.local_cluster(n_workers=1, threads_per_worker=1) as cluster:
        yield cluster


@pytest.fixture
def sup(atasker_supervisor_factory: Any, cluster: Any) -> TaskSupervisor:
    """A supervisor configured for the module's cluster, not connected yet."""
    sup = atasker_supervisor_factory(autoload=False, plugins=[atasker_dask])
    atasker_dask.configure(sup, address=cluster.scheduler_address, connect_timeout=WAIT)
    return sup


def test_a_huge_task_timeout_leaves_every_handle_resolving(sup):
    far = sup.submit(operator.add, (2, 3), tt=TT_DASK, timeout=1e10)
    assert far.result(WAIT) == 5
    later = [sup.submit(operator.mul, (i, i), tt=TT_DASK, timeout=1e300) for i in range(5)]
    assert [t.result(WAIT) for t in later] == [i * i for i in range(5)]
    assert sup.submit(operator.neg, (1,), tt=TT_DASK).result(WAIT) == -1


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_a_bad_task_timeout_is_refused_before_anything_changes(sup, bad):
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds"):
        sup.submit(operator.neg, (1,), tt=TT_DASK, timeout=bad)
    assert not sup.executor(TT_DASK).in_use()  # not even a connection was started
    assert sup.get_info()["task_types"].get(TT_DASK, {}).get("queued", 0) == 0
    assert sup.submit(operator.neg, (1,), tt=TT_DASK, timeout=WAIT).result(WAIT) == -1


def test_huge_waits_for_the_client_and_the_pool_are_clamped(sup):
    # Not connected yet: get_client waits for the connection, up to 1e10 s.
    client = atasker_dask.get_client(sup, timeout=1e10)
    assert client.scheduler_info()["workers"]
    assert sup.executor(TT_DASK).wait_threads(1, timeout=1e10)


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_bad_waits_are_refused_before_connecting(sup, bad):
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds >= 0 or None"):
        atasker_dask.get_client(sup, timeout=bad)
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds >= 0 or None"):
        sup.executor(TT_DASK).wait_threads(1, timeout=bad)
    assert not sup.executor(TT_DASK).in_use()
    assert atasker_dask.get_client(sup, timeout=WAIT) is not None


@pytest.mark.parametrize("option", ["connect_timeout", "retry_interval", "submit_interval"])
@pytest.mark.parametrize("bad", [math.inf, math.nan, "5", True, -1], ids=repr)
def test_configure_refuses_bad_durations(atasker_supervisor_factory, cluster, option, bad):
    sup = atasker_supervisor_factory(autoload=False, plugins=[atasker_dask])
    with pytest.raises(ValueError, match=f"{option} must be a finite number of seconds >= 0"):
        atasker_dask.configure(sup, address=cluster.scheduler_address, **{option: bad})
