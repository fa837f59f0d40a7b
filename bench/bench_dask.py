"""Dask tasks: atasker's task type "dask" against the Dask client it wraps.

Run: ``python bench/bench_dask.py [--quick]`` (needs ``plugins/atasker-dask``).

One local cluster (as atasker starts one: a worker process per CPU, one
thread each, worker-saturation 1.0) serves every measurement: the direct
client is ``Client(cluster)``, atasker is given it with
``atasker_dask.configure(sup, cluster=cluster)``, so both clients share the
cluster's event loop thread, as when atasker starts the cluster itself.
Rounds are interleaved so that both sides see the same machine load; the
figure is the median of the rounds.

* trivial tasks -- 2,000 ``operator.add`` calls, submitted at once, all
  results waited for:

  - direct: ``client.submit(add, i, 1, pure=False)`` for each, then
    ``client.gather`` (Dask's fastest path: no tokenizing);
  - atasker, default pool, NORMAL priority (the default): the pool follows
    the cluster, and NORMAL tasks keep up to eight per worker thread on the
    cluster -- this is the figure the target applies to;
  - atasker, default pool, LOW priority: one task per worker thread on the
    cluster, so this measures the round trip per task;
  - atasker, unlimited pool (``set_pool("dask", pool_size=0)``): every task
    goes to Dask at once, as in the direct case: atasker's own cost per task;
  - atasker, default pool, connected by address (``configure(address=...)``)
    as to a remote scheduler: its client runs its own event loop thread,
    which competes for the GIL with the scheduler's in this process.

* 10 ms tasks -- 200 ``time.sleep(0.01)`` calls, the smallest work the dask
  task type is meant for, direct vs atasker's default pool.

Prints tasks per second and the ratio atasker / direct (target >= 0.8).
"""

from __future__ import annotations

import argparse
import logging
import operator
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import wait
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import atasker_dask
from distributed import Client

from atasker import TASK_LOW, TASK_NORMAL, TaskSupervisor


def direct(client: Client, func: Callable, args: list[tuple]) -> float:
    t0 = time.perf_counter()
    futures = [client.submit(func, *a, pure=False) for a in args]
    client.gather(futures)
    return len(args) / (time.perf_counter() - t0)


def through_atasker(sup: TaskSupervisor, func: Callable, args: list[tuple], priority: int = TASK_NORMAL) -> float:
    t0 = time.perf_counter()
    tasks = [sup.submit(func, a, tt=atasker_dask.TT_DASK, priority=priority) for a in args]
    if wait(tasks, timeout=600).not_done:
        raise TimeoutError("dask tasks did not finish in 600 s")
    for task in tasks:
        task.result()
    return len(args) / (time.perf_counter() - t0)


def supervisor(pool_size: int | None, **settings: Any) -> TaskSupervisor:
    """A supervisor whose dask tasks go where ``atasker_dask.configure(**settings)`` says."""
    # Tasks wait for a slot for seconds here, on purpose: no watchdog warnings.
    sup = TaskSupervisor(
        plugins=[atasker_dask],
        autoload=False,
        name=f"bench-{pool_size}",
        timeout_warning=3600,
        timeout_critical=3600,
    )
    sup.start()
    atasker_dask.configure(sup, **settings)
    if pool_size is not None:
        sup.set_pool(atasker_dask.TT_DASK, pool_size=pool_size)
    client = atasker_dask.get_client(sup, timeout=60)
    threads = sum(w["nthreads"] for w in client.scheduler_info(n_workers=-1)["workers"].values())
    sup.executor(atasker_dask.TT_DASK).wait_threads(threads, timeout=60)
    return sup


def report(name: str, direct_rates: list[float], atasker_rates: list[float]) -> float:
    d, a = statistics.median(direct_rates), statistics.median(atasker_rates)
    print(f"{name:<40} direct {d:8.0f}/s   atasker {a:8.0f}/s   ratio {a / d:5.2f}x")
    return a / d


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks and rounds")
    args = parser.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)
    n_trivial, n_sleep, rounds = (300, 40, 3) if args.quick else (2000, 200, 5)

    with atasker_dask.local_cluster() as cluster, Client(cluster, set_as_default=False) as client:
        print(
            f"cluster: {len(cluster.workers)} worker processes x 1 thread, "
            f"{n_trivial} trivial tasks, {n_sleep} 10 ms tasks, median of {rounds} rounds"
        )
        # The bench's cluster, as Client(cluster) is for the direct case: both
        # clients share the cluster's event loop thread.
        default = supervisor(None, cluster=cluster)
        unlimited = supervisor(0, cluster=cluster)
        # By address, as for a remote scheduler: a client with its own loop thread.
        by_address = supervisor(None, address=cluster.scheduler_address)
        trivial = [(i, 1) for i in range(n_trivial)]
        sleeps = [(0.01,) for _ in range(n_sleep)]
        # Warm up: imports on the workers, connections, Dask's duration estimates.
        direct(client, operator.add, trivial[:100])
        through_atasker(default, operator.add, trivial[:100])
        through_atasker(unlimited, operator.add, trivial[:100])
        through_atasker(by_address, operator.add, trivial[:100])
        direct(client, time.sleep, [(0.001,)] * 10)
        through_atasker(default, time.sleep, [(0.001,)] * 10)

        keys = ("direct", "default", "low", "unlimited", "address", "d_sleep", "a_sleep")
        rates: dict[str, list[float]] = {k: [] for k in keys}
        for _ in range(rounds):
            rates["direct"].append(direct(client, operator.add, trivial))
            rates["default"].append(through_atasker(default, operator.add, trivial))
            rates["low"].append(through_atasker(default, operator.add, trivial, TASK_LOW))
            rates["unlimited"].append(through_atasker(unlimited, operator.add, trivial))
            rates["address"].append(through_atasker(by_address, operator.add, trivial))
            rates["d_sleep"].append(direct(client, time.sleep, sleeps))
            rates["a_sleep"].append(through_atasker(default, time.sleep, sleeps))
        print()
        ratio = report("trivial tasks, default pool, NORMAL", rates["direct"], rates["default"])
        report("trivial tasks, default pool, LOW", rates["direct"], rates["low"])
        report("trivial tasks, unlimited pool", rates["direct"], rates["unlimited"])
        report("trivial tasks, default pool, by address", rates["direct"], rates["address"])
        report("10 ms tasks, default pool, NORMAL", rates["d_sleep"], rates["a_sleep"])
        print()
        print(f"target (trivial tasks, default pool, NORMAL) >= 0.8x: {'met' if ratio >= 0.8 else 'NOT met'}")
        for sup in (default, unlimited, by_address):
            sup.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
