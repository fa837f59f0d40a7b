"""Coroutine tasks: atasker against ``asyncio.run_coroutine_threadsafe``.

Run: ``python bench/bench_coroutines.py [--quick] [--no-uvloop]``.

Both sides run the same trivial coroutine on an event loop in its own thread,
submitted from the main thread, in the same run (median of several rounds,
interleaved so that drift hits both alike):

* throughput -- submit N coroutines, then wait for every handle;
  atasker: ``supervisor.submit(f, tt="coroutine", options={"loop": aloop})``
  (queue policy, task records, pool accounting, handle);
  baseline: ``asyncio.run_coroutine_threadsafe(f(), loop)`` on a plain loop
  thread (no priorities, no records);
* round trip -- idle loop, submit one coroutine and wait for its result
  (p50 / p99).

Prints each figure and the ratio atasker / baseline; with uvloop installed
the same figures again with both sides on uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atasker import TaskSupervisor

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


async def noop() -> None:
    return None


class PlainLoopThread:
    """The baseline: an event loop running forever in a thread."""

    def __init__(self, factory: LoopFactory) -> None:
        self.loop = factory()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench_plain_loop")
        self.thread.start()

    def submit(self) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(noop(), self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class AtaskerLoop:
    """A supervisor with one aloop; each submission is a coroutine task."""

    def __init__(self, use_uvloop: bool) -> None:
        self.sup = TaskSupervisor(autoload=False, name="bench")
        self.sup.start()
        self.aloop = self.sup.create_aloop("bench", uvloop=use_uvloop)
        self.options = {"loop": self.aloop}
        self.submit_ = self.sup.submit

    def submit(self) -> Future[Any]:
        return self.submit_(noop, tt="coroutine", options=self.options)

    def close(self) -> None:
        self.sup.stop()


def throughput(runner: Any, n: int) -> float:
    runner.submit().result()  # warm up: loop running, executor created
    t0 = time.perf_counter()
    futures = [runner.submit() for _ in range(n)]
    wait(futures)
    elapsed = time.perf_counter() - t0
    for f in futures:
        f.result()  # nothing lost, nothing failed
    return n / elapsed


def round_trip(runner: Any, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        runner.submit().result()
        samples.append(time.perf_counter() - t0)
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_suite(label: str, factory: LoopFactory, use_uvloop: bool, n: int, rounds: int, trips: int) -> dict[str, float]:
    tp_a, tp_b = [], []
    for _ in range(rounds):
        plain = PlainLoopThread(factory)
        try:
            tp_b.append(throughput(plain, n))
        finally:
            plain.close()
        ours = AtaskerLoop(use_uvloop)
        try:
            tp_a.append(throughput(ours, n))
        finally:
            ours.close()
    a, b = statistics.median(tp_a), statistics.median(tp_b)
    print(
        f"[{label}] throughput ({n} coroutines, {rounds} rounds): "
        f"atasker {a:,.0f}/s  run_coroutine_threadsafe {b:,.0f}/s  ratio {a / b:.2f}x"
    )
    plain = PlainLoopThread(factory)
    rt_b = round_trip(plain, trips)
    plain.close()
    ours = AtaskerLoop(use_uvloop)
    rt_a = round_trip(ours, trips)
    ours.close()
    figures = {"throughput_atasker": a, "throughput_baseline": b}
    for q in (0.5, 0.99):
        qa, qb = pct(rt_a, q) * 1e6, pct(rt_b, q) * 1e6
        figures[f"p{int(q * 100)}_atasker"] = qa
        figures[f"p{int(q * 100)}_baseline"] = qb
        print(
            f"[{label}] round trip p{int(q * 100)}: atasker {qa:.1f} us  "
            f"run_coroutine_threadsafe {qb:.1f} us  ratio {qa / qb:.2f}x"
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    parser.add_argument("--no-uvloop", action="store_true", help="skip the uvloop figures")
    opts = parser.parse_args()
    rounds = 3 if opts.quick else 7
    n = 5000 if opts.quick else 20000
    trips = 500 if opts.quick else 2000

    print(f"coroutine tasks: atasker vs asyncio.run_coroutine_threadsafe (python {sys.version.split()[0]})")
    base = run_suite("asyncio", asyncio.new_event_loop, False, n, rounds, trips)
    if opts.no_uvloop:
        return
    try:
        import uvloop
    except ImportError:
        print("uvloop not installed: no uvloop figures (pip install uvloop)")
        return
    fast = run_suite(f"uvloop {uvloop.__version__}", uvloop.new_event_loop, True, n, rounds, trips)
    print(
        "uvloop / asyncio throughput: atasker "
        f"{fast['throughput_atasker'] / base['throughput_atasker']:.2f}x  "
        f"run_coroutine_threadsafe {fast['throughput_baseline'] / base['throughput_baseline']:.2f}x"
    )


if __name__ == "__main__":
    main()
