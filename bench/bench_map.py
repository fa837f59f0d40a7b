"""Batches: ``supervisor.map`` against the stdlib's and other libraries' maps.

Run: ``make bench`` or ``python bench/bench_map.py [--quick] [--rounds N] [--items N]``.

100,000 trivial items (``x * x``), 2 worker processes (or 2 threads for the
thread rows), results consumed in order; every pool is started and warmed
before it is timed.  Rounds are interleaved (every peer once per round) and
the median and range of items per second are printed, with ratios to
``multiprocessing.Pool.map``:

* atasker ``map(tt=TT_MP)`` and ``map(tt=TT_THREAD)`` (default chunk size,
  ``ceil(n / (4 * workers))``);
* ``multiprocessing.Pool.map`` with its default chunking (the same rule);
* ``ProcessPoolExecutor.map`` with that chunk size (its default is 1);
* ``ThreadPoolExecutor.map`` (threads; no chunks);
* pebble ``ProcessPool.map``, loky ``get_reusable_executor().map`` (that
  chunk size) and mpire ``WorkerPool.map`` (its default), each only if
  installed (``pip install '.[bench]'``); a missing one prints "not
  installed, skipped".
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import math
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Appended, not prepended: an atasker on PYTHONPATH (an older tree) wins.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from atasker import TT_MP, TT_THREAD, TaskSupervisor

WORKERS = 2


def square(x: int) -> int:
    return x * x


if __name__ == "__main__":
    # Workers import the task function by name: use the importable module's.
    square = importlib.import_module("bench.bench_map").square  # type: ignore[assignment]


class Runner:
    """One peer: ``start()`` once, ``run(n)`` per round, ``close()`` at the end."""

    name = ""

    def start(self) -> None: ...

    def run(self, n: int) -> list[int]:
        raise NotImplementedError

    def close(self) -> None: ...


class AtaskerMap(Runner):
    def __init__(self, tt: str, method: str) -> None:
        self.tt = tt
        self.name = f"atasker map ({'processes' if tt == TT_MP else 'threads'})"
        self.sup = TaskSupervisor(pool_size=WORKERS, reserve_normal=0, reserve_high=0, autoload=False, name="bench_map")
        self.method = method

    def start(self) -> None:
        self.sup.start()
        if self.tt == TT_MP:
            self.sup.create_mp_pool(pool_size=WORKERS, reserve_normal=0, reserve_high=0, start_method=self.method)
        list(self.sup.map(square, range(100), tt=self.tt))

    def run(self, n: int) -> list[int]:
        return list(self.sup.map(square, range(n), tt=self.tt))

    def close(self) -> None:
        self.sup.stop()


class PoolMap(Runner):
    name = "multiprocessing.Pool.map"

    def __init__(self, method: str) -> None:
        self.method = method

    def start(self) -> None:
        self.pool = multiprocessing.get_context(self.method).Pool(WORKERS)
        self.pool.map(square, range(100))

    def run(self, n: int) -> list[int]:
        return self.pool.map(square, range(n))

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


def chunksize(n: int) -> int:
    """``Pool.map``'s default chunk size, given to the peers whose default is 1."""
    return math.ceil(n / (4 * WORKERS))


class FuturesMap(Runner):
    def __init__(self, kind: str, method: str) -> None:
        self.kind = kind
        self.method = method
        self.name = "ProcessPoolExecutor.map (chunked)" if kind == "process" else "ThreadPoolExecutor.map"

    def start(self) -> None:
        if self.kind == "process":
            ctx = multiprocessing.get_context(self.method)
            self.ex: concurrent.futures.Executor = concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=ctx)
        else:
            self.ex = concurrent.futures.ThreadPoolExecutor(WORKERS)
        list(self.ex.map(square, range(100)))

    def run(self, n: int) -> list[int]:
        if self.kind == "process":
            return list(self.ex.map(square, range(n), chunksize=chunksize(n)))
        return list(self.ex.map(square, range(n)))

    def close(self) -> None:
        self.ex.shutdown()


class PebbleMap(Runner):
    name = "pebble ProcessPool.map"

    def __init__(self, method: str) -> None:
        import pebble

        self.pool = pebble.ProcessPool(max_workers=WORKERS, context=multiprocessing.get_context(method))

    def start(self) -> None:
        list(self.pool.map(square, range(100)).result())

    def run(self, n: int) -> list[int]:
        return list(self.pool.map(square, range(n), chunksize=chunksize(n)).result())

    def close(self) -> None:
        self.pool.stop()
        self.pool.join()


class LokyMap(Runner):
    name = "loky executor.map"

    def __init__(self, method: str) -> None:
        import loky

        self.ex = loky.get_reusable_executor(max_workers=WORKERS)

    def start(self) -> None:
        list(self.ex.map(square, range(100)))

    def run(self, n: int) -> list[int]:
        return list(self.ex.map(square, range(n), chunksize=chunksize(n)))

    def close(self) -> None:
        self.ex.shutdown()


class MpireMap(Runner):
    name = "mpire WorkerPool.map"

    def __init__(self, method: str) -> None:
        import mpire

        self.pool = mpire.WorkerPool(n_jobs=WORKERS, keep_alive=True, start_method=method)

    def start(self) -> None:
        self.pool.map(square, range(100), progress_bar=False)

    def run(self, n: int) -> list[int]:
        return self.pool.map(square, range(n), progress_bar=False)

    def close(self) -> None:
        self.pool.terminate()


def runners(method: str) -> list[Runner]:
    out: list[Runner] = [
        AtaskerMap(TT_MP, method),
        PoolMap(method),
        FuturesMap("process", method),
        AtaskerMap(TT_THREAD, method),
        FuturesMap("thread", method),
    ]
    peers: list[tuple[str, Callable[[str], Runner]]] = [
        ("pebble", PebbleMap),
        ("loky", LokyMap),
        ("mpire", MpireMap),
    ]
    for module, make in peers:
        try:
            out.append(make(method))
        except ImportError:
            print(f"{module}: not installed, skipped")
    return out


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):>12,.0f} [{min(values):,.0f}-{max(values):,.0f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, 3 with --quick)")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--start-method", default="forkserver", choices=multiprocessing.get_all_start_methods())
    opts = parser.parse_args()
    rounds = opts.rounds or (3 if opts.quick else 5)
    n = opts.items
    print(
        f"map of {n:,} trivial items, {WORKERS} workers, start method {opts.start_method} "
        f"(python {sys.version.split()[0]})"
    )
    pools = runners(opts.start_method)
    for pool in pools:
        pool.start()
    expected = [x * x for x in range(n)]
    rates: dict[str, list[float]] = {p.name: [] for p in pools}
    try:
        for _ in range(rounds):  # interleaved: drift and neighbours hit every peer alike
            for pool in pools:
                t0 = time.perf_counter()
                result = pool.run(n)
                rates[pool.name].append(n / (time.perf_counter() - t0))
                assert result == expected, pool.name
    finally:
        for pool in pools:
            pool.close()
    ref = statistics.median(rates[PoolMap.name])
    print(f"items per second, median [range] of {rounds} rounds; ratio to Pool.map (per-round ratios):")
    per_round_ref = rates[PoolMap.name]
    for name, values in rates.items():
        ratios = [v / r for v, r in zip(values, per_round_ref, strict=True)]
        print(
            f"  {name:<36} {spread(values)}  {statistics.median(values) / ref:.2f}x "
            f"[{min(ratios):.2f}-{max(ratios):.2f}]"
        )


if __name__ == "__main__":
    main()
