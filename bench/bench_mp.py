"""Process tasks: atasker against multiprocessing.Pool, ProcessPoolExecutor,
pebble, loky and mpire.

Run: ``python bench/bench_mp.py [--quick] [--rounds N] [--start-method forkserver]``.

Measures, for every pool in the same run and with the same start method
(loky: its own ``loky`` context), medians of interleaved rounds (every
round runs every pool once, in turn, so that machine noise hits all alike):

* throughput -- 5,000 tiny tasks (``x * x``) on 2 worker processes, submit
  all then wait for all: atasker through ``supervisor.submit`` and through
  the seed's path, ``background_task(f, tt=TT_MP)(x)`` on the global
  ``task_supervisor``; the peers through ``apply_async`` / ``submit`` /
  ``schedule``;
* round trip -- idle warm pool, submit one task and wait for its result
  (p50 / p99);
* death to error -- a worker running a task is SIGKILLed: time until the
  error is on the task's handle (``multiprocessing.Pool`` never reports it:
  the task hangs; ``ProcessPoolExecutor`` reports it and breaks the pool);
* cloudpickle -- what a lambda costs against a module-level function.

Prints each figure, its range over the rounds, and the ratios atasker /
peer.  A peer that is not installed (``pip install -e '.[bench]'``) prints
"not installed, skipped".  To compare two atasker trees in one session,
run this script with ``PYTHONPATH`` pointing at the other tree: the first
line names the atasker it imported.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import multiprocessing
import os
import pickle
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Appended, not prepended: a PYTHONPATH naming another atasker tree wins.
sys.path.append(str(Path(__file__).resolve().parent.parent))

import atasker
from atasker import TT_MP, TaskSupervisor, background_task
from atasker.builtin.mp.worker import dumps


def square(x: int) -> int:
    return x * x


def sleep(seconds: float) -> None:
    time.sleep(seconds)


if __name__ == "__main__":
    # Run from __main__, these functions would be pickled by reference by the
    # peers but by value by atasker (which cannot count on a worker being able
    # to import __main__): use them from the importable module instead.
    _self = importlib.import_module("bench.bench_mp")
    square, sleep = _self.square, _self.sleep  # type: ignore[assignment]


def _main_square(x: int) -> int:
    """A function of the script itself: pickled by value, like a lambda."""
    return x * x


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ------------------------------------------------------------------ the pools


class Atasker:
    name = "atasker submit"

    def __init__(self, method: str, workers: int) -> None:
        self.sup = TaskSupervisor(autoload=False, name="bench")
        self.sup.start()
        self.sup.create_mp_pool(pool_size=workers, reserve_normal=0, reserve_high=0, start_method=method)
        self.executor = self.sup.executor(TT_MP)
        self.executor.wait_workers(workers, 60)

    def submit(self, f: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        return self.sup.submit(f, args, tt=TT_MP)

    def worker_pids(self) -> list[int]:
        return self.executor.worker_pids()

    def close(self) -> None:
        self.sup.stop()


class AtaskerDecorator:
    """The seed's documented path: ``background_task(f, tt=TT_MP)(x)`` on the global supervisor."""

    name = "atasker background_task"

    def __init__(self, method: str, workers: int) -> None:
        self.sup = atasker.task_supervisor
        self.sup.start()
        self.sup.create_mp_pool(pool_size=workers, reserve_normal=0, reserve_high=0, start_method=method)
        self.sup.executor(TT_MP).wait_workers(workers, 60)
        self._wrapped: dict[Any, Any] = {}

    def submit(self, f: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        wrapped = self._wrapped.get(f)
        if wrapped is None:
            wrapped = self._wrapped[f] = background_task(f, tt=TT_MP)
        return wrapped(*args)

    def close(self) -> None:
        self.sup.stop()


class MPPool:
    name = "multiprocessing.Pool"

    def __init__(self, method: str, workers: int) -> None:
        self.pool = multiprocessing.get_context(method).Pool(workers)

    def submit(self, f: Callable[..., Any], *args: Any) -> Any:
        return self.pool.apply_async(f, args)

    @staticmethod
    def result(handle: Any, timeout: float | None = None) -> Any:
        return handle.get(timeout)

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.pool._pool]  # type: ignore[attr-defined]

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


class PPE:
    name = "ProcessPoolExecutor"

    def __init__(self, method: str, workers: int) -> None:
        self.ex = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))

    def submit(self, f: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        return self.ex.submit(f, *args)

    def worker_pids(self) -> list[int]:
        return list(self.ex._processes)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.ex.shutdown(wait=True, cancel_futures=True)


class Pebble:
    name = "pebble"

    def __init__(self, method: str, workers: int) -> None:
        import pebble

        self.pool = pebble.ProcessPool(max_workers=workers, context=multiprocessing.get_context(method))

    def submit(self, f: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        return self.pool.schedule(f, args=args)

    def close(self) -> None:
        self.pool.stop()
        self.pool.join()


class Loky:
    name = "loky"

    def __init__(self, method: str, workers: int) -> None:
        import loky

        self.ex = loky.ProcessPoolExecutor(max_workers=workers)

    def submit(self, f: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        return self.ex.submit(f, *args)

    def close(self) -> None:
        self.ex.shutdown(wait=True)


class Mpire:
    name = "mpire"

    def __init__(self, method: str, workers: int) -> None:
        import mpire

        self.pool = mpire.WorkerPool(n_jobs=workers, start_method=method)

    def submit(self, f: Callable[..., Any], *args: Any) -> Any:
        return self.pool.apply_async(f, args=args)

    @staticmethod
    def result(handle: Any, timeout: float | None = None) -> Any:
        return handle.get(timeout)

    def close(self) -> None:
        self.pool.terminate()


PEERS = (MPPool, PPE, Pebble, Loky, Mpire)
ATASKER = (Atasker, AtaskerDecorator)
BASE = "multiprocessing.Pool"


def result(pool: Any, handle: Any, timeout: float | None = None) -> Any:
    return pool.result(handle, timeout) if hasattr(pool, "result") else handle.result(timeout)


def make_pools(method: str, workers: int) -> list[Any]:
    pools = []
    for cls in (*PEERS, *ATASKER):
        try:
            pools.append(cls(method, workers))
        except ImportError:
            print(f"  {cls.name}: not installed, skipped")
    return pools


# ------------------------------------------------------------------ measurements


def throughput(pool: Any, n: int, func: Callable[..., Any] = square) -> float:
    result(pool, pool.submit(func, 1), 60)  # warm
    t0 = time.perf_counter()
    handles = [pool.submit(func, i) for i in range(n)]
    for handle in handles:
        result(pool, handle, 60)
    return n / (time.perf_counter() - t0)


def round_trip(pool: Any, n: int) -> list[float]:
    result(pool, pool.submit(square, 1), 60)
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        result(pool, pool.submit(square, i), 60)
        samples.append(time.perf_counter() - t0)
    return samples


def death_to_error(pool: Any, limit: float = 2.0) -> float | None:
    """SIGKILL the worker running a task; seconds until its handle has the error."""
    result(pool, pool.submit(square, 1), 60)
    handle = pool.submit(sleep, 30)
    # One worker: the task is on it as soon as the worker picked it up.
    time.sleep(0.2)  # (a benchmark, not a test: give every pool time to start it)
    pid = pool.worker_pids()[0]
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    try:
        result(pool, handle, limit)
    except multiprocessing.TimeoutError:
        return None  # multiprocessing.Pool: never
    except concurrent.futures.TimeoutError:
        return None
    except Exception:
        return time.perf_counter() - t0
    return None


def describe(values: list[float], fmt: str = "{:.0f}") -> str:
    return f"{fmt.format(statistics.median(values))}  [{fmt.format(min(values))} .. {fmt.format(max(values))}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and samples")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, --quick 3)")
    parser.add_argument("--start-method", default="forkserver", choices=multiprocessing.get_all_start_methods())
    parser.add_argument("--only", choices=("throughput", "all"), default="all", help="skip the fault figures")
    opts = parser.parse_args()
    rounds = opts.rounds or (3 if opts.quick else 5)
    n_tasks = 5000
    n_rt = 300 if opts.quick else 1000
    method = opts.start_method
    workers = 2
    print(f"atasker from {Path(atasker.__file__).resolve().parent}")
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, start method {method}, {workers} workers")

    pools = make_pools(method, workers)
    tput: dict[str, list[float]] = {p.name: [] for p in pools}
    rts: dict[str, list[float]] = {p.name: [] for p in pools}
    for _ in range(rounds):
        for p in pools:
            tput[p.name].append(throughput(p, n_tasks))
        for p in pools:
            # Round-trip p50 of each round; the figure is their median.
            rts[p.name].append(pct(round_trip(p, n_rt // rounds + 1), 0.5))
    for p in pools:
        p.close()

    med = {name: statistics.median(v) for name, v in tput.items()}
    print(f"\nthroughput, {n_tasks} x*x tasks, median [range] of {rounds} interleaved rounds (tasks/s):")
    for name, values in tput.items():
        ratio = f"   atasker submit / this = {med['atasker submit'] / med[name]:.2f}x" if "atasker" not in name else ""
        print(f"  {name:24s} {describe(values):28s}{ratio}")
    if BASE in med:
        for name in ("atasker submit", "atasker background_task"):
            lo = min(tput[name]) / max(tput[BASE])
            hi = max(tput[name]) / min(tput[BASE])
            per_round = [a / b for a, b in zip(tput[name], tput[BASE], strict=True)]
            print(
                f"  {name} / {BASE} = {med[name] / med[BASE]:.2f}x "
                f"(per round: {', '.join(f'{r:.2f}' for r in per_round)}; extremes {lo:.2f}..{hi:.2f})"
            )

    p50 = {name: statistics.median(v) for name, v in rts.items()}
    print(f"\nround trip, idle warm pool, p50 per round, median [range] of {rounds} rounds (ms):")
    for name, values in rts.items():
        ratio = f"   atasker submit / this = {p50['atasker submit'] / p50[name]:.2f}x" if "atasker" not in name else ""
        print(f"  {name:24s} {describe([1e3 * v for v in values], '{:.3f}'):28s}{ratio}")
    if opts.only == "throughput":
        return

    print("\ndeath to error: SIGKILL the worker running a task (s):")
    deaths = []
    for _ in range(3 if opts.quick else 5):
        pool = Atasker(method, 1)
        deaths.append(death_to_error(pool))
        pool.close()
    ok = [d for d in deaths if d is not None]
    med_ms, max_ms = statistics.median(ok) * 1e3, max(ok) * 1e3
    print(f"  atasker                median {med_ms:.2f} ms, max {max_ms:.2f} ms (pool keeps serving)")
    for cls in (PPE, MPPool):
        pool = cls(method, 1)
        d = death_to_error(pool)
        verdict = "no error after 2 s: the task hangs forever" if d is None else f"{d * 1e3:.2f} ms"
        extra = " (and the whole pool is broken)" if cls is PPE and d is not None else ""
        print(f"  {pool.name:22s} {verdict}{extra}")
        pool.close()

    print("\ncloudpickle (lambdas, closures, __main__ functions go by value):")
    payload = (1, square, (7,), {})
    lam = (1, lambda x: x * x, (7,), {})
    main_func = (1, _main_square, (7,), {})
    for label, obj in (("module function", payload), ("lambda", lam), ("__main__ function", main_func)):
        t0 = time.perf_counter()
        for _ in range(2000):
            data = dumps(obj)
        t1 = time.perf_counter()
        for _ in range(2000):
            pickle.loads(data)
        t2 = time.perf_counter()
        dump_us, load_us = (t1 - t0) / 2 * 1e3, (t2 - t1) / 2 * 1e3
        print(f"  {label:17s} {len(data):4d} bytes, dumps {dump_us:6.1f} us, loads {load_us:6.1f} us")
    pool = Atasker(method, workers)
    by_ref = statistics.median(throughput(pool, n_tasks) for _ in range(rounds))
    by_value = statistics.median(throughput(pool, n_tasks, lambda x: x * x) for _ in range(rounds))
    pool.close()
    print(f"  tasks/s: module function {by_ref:.0f}, lambda {by_value:.0f} ({by_value / by_ref:.2f}x)")


if __name__ == "__main__":
    main()
