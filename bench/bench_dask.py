"""Dask tasks: atasker's task type "dask" against the Dask client it wraps.

Run: ``python bench/bench_dask.py [--quick]`` (needs ``plugins/atasker-dask``).

One local cluster (as atasker starts one: a worker process per CPU, one
thread each, worker-saturation 1.0) serves every measurement, interleaved
round by round so that both sides see the same machine load; the figure is
the median of the rounds.

* trivial tasks -- 2,000 ``operator.add`` calls, submitted at once, all
  results waited for:

  - direct: ``client.submit(add, i, 1, pure=False)`` for each, then
    ``client.gather`` (Dask's fastest path: no tokenizing);
  - atasker, default pool: the pool follows the cluster (pool size = worker
    threads, reserves as many again): at most ``2 x threads`` NORMAL tasks are
    on the cluster at once, so this measures the round trip per task;
  - atasker, unlimited pool (``set_pool("dask", pool_size=0)``): every task
    goes to Dask at once, as in the direct case: this measures atasker's own
    cost per task.

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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import atasker_dask
from distributed import Client

from atasker import TaskSupervisor


def direct(client: Client, func: Callable, args: list[tuple]) -> float:
    t0 = time.perf_counter()
    futures = [client.submit(func, *a, pure=False) for a in args]
    client.gather(futures)
    return len(args) / (time.perf_counter() - t0)


def through_atasker(sup: TaskSupervisor, func: Callable, args: list[tuple]) -> float:
    t0 = time.perf_counter()
    tasks = [sup.submit(func, a, tt=atasker_dask.TT_DASK) for a in args]
    if wait(tasks, timeout=600).not_done:
        raise TimeoutError("dask tasks did not finish in 600 s")
    for task in tasks:
        task.result()
    return len(args) / (time.perf_counter() - t0)


def supervisor(address: str, pool_size: int | None) -> TaskSupervisor:
    # Tasks wait for a slot for seconds here, on purpose: no watchdog warnings.
    sup = TaskSupervisor(
        plugins=[atasker_dask],
        autoload=False,
        name=f"bench-{pool_size}",
        timeout_warning=3600,
        timeout_critical=3600,
    )
    sup.start()
    atasker_dask.configure(sup, address=address)
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
        default = supervisor(cluster.scheduler_address, None)
        unlimited = supervisor(cluster.scheduler_address, 0)
        trivial = [(i, 1) for i in range(n_trivial)]
        sleeps = [(0.01,) for _ in range(n_sleep)]
        # Warm up: imports on the workers, connections, Dask's duration estimates.
        direct(client, operator.add, trivial[:100])
        through_atasker(default, operator.add, trivial[:100])
        through_atasker(unlimited, operator.add, trivial[:100])
        direct(client, time.sleep, [(0.001,)] * 10)
        through_atasker(default, time.sleep, [(0.001,)] * 10)

        rates: dict[str, list[float]] = {k: [] for k in ("direct", "default", "unlimited", "d_sleep", "a_sleep")}
        for _ in range(rounds):
            rates["direct"].append(direct(client, operator.add, trivial))
            rates["default"].append(through_atasker(default, operator.add, trivial))
            rates["unlimited"].append(through_atasker(unlimited, operator.add, trivial))
            rates["d_sleep"].append(direct(client, time.sleep, sleeps))
            rates["a_sleep"].append(through_atasker(default, time.sleep, sleeps))
        print()
        report("trivial tasks, atasker default pool", rates["direct"], rates["default"])
        ratio = report("trivial tasks, atasker unlimited pool", rates["direct"], rates["unlimited"])
        report("10 ms tasks, atasker default pool", rates["d_sleep"], rates["a_sleep"])
        print()
        print(f"overhead target (unlimited pool, trivial tasks) >= 0.8x: {'met' if ratio >= 0.8 else 'NOT met'}")
        default.stop()
        unlimited.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
