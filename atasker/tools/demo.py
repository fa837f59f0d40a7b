"""``atasker demo``: a mixed workload through deliberately small pools.

What runs -- a small backend's afternoon, compressed:

* **fetch** -- I/O-bound thread tasks (``time.sleep`` stands in for a
  network call), pool of 3 threads + 1 NORMAL + 1 HIGH reserve;
* **crunch** -- CPU-bound process tasks (each burns a fixed amount of CPU
  time in a worker process), pool of 1 process + 1 + 1;
* **api** -- coroutines on an asyncio loop (``asyncio.sleep``), pool of
  3 + 1 + 1;
* a batch of LOW work arrives first and fills every pool; NORMAL and HIGH
  requests keep coming; a few CRITICAL alerts arrive now and then.

While it runs, the live view (:mod:`atasker.tools.liveview`) shows each pool; at the
end the demo prints the wait for a slot per task type and priority, and
writes the run's trace (:mod:`atasker.builtin.trace`, open it in Perfetto)
and its PNG timeline (:mod:`atasker.builtin.trace.plot`) to a folder it names.

``--quick`` is the same story in a few seconds (CI); ``--engine dask`` runs
the CPU-bound tasks on the ``"dask"`` task type of the ``atasker-dask``
plugin instead of the process pool.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atasker.core.supervisor import TaskSupervisor
from atasker.core.task import BANDS, PRIORITY_NAMES, TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL, Task

__all__ = ["Job", "burn_cpu", "call_api", "fetch", "run_demo", "summarize", "workload"]

NAMES = PRIORITY_NAMES

#: Deliberately small pools, so that queues form and the priorities show.
POOLS: dict[str, dict[str, int]] = {
    "thread": {"pool_size": 3, "reserve_normal": 1, "reserve_high": 1},
    "mp": {"pool_size": 1, "reserve_normal": 1, "reserve_high": 1},
    "coroutine": {"pool_size": 3, "reserve_normal": 1, "reserve_high": 1},
}
#: Task type of each kind of job (``cpu`` becomes ``"dask"`` with --engine dask).
TASK_TYPES = {"io": "thread", "cpu": "mp", "coro": "coroutine"}
JOB_NAMES = {"io": "fetch", "cpu": "crunch", "coro": "api"}
DEFAULT_OUT = "atasker-demo"


# ------------------------------------------------------------------- the work


def fetch(seconds: float) -> float:
    """An I/O-bound task: waits *seconds* as a network call would."""
    time.sleep(seconds)
    return seconds


def burn_cpu(seconds: float) -> int:
    """A CPU-bound task: burns *seconds* of this process's CPU time hashing.

    CPU time, not wall time: with more busy processes than cores each one
    takes longer, as real CPU-bound work does.
    """
    import hashlib

    end = time.process_time() + seconds
    digest, rounds = b"atasker", 0
    while time.process_time() < end:
        for _ in range(200):
            digest = hashlib.sha256(digest).digest()
        rounds += 200
    return rounds


async def call_api(seconds: float) -> float:
    """A coroutine task: awaits *seconds* as an async HTTP call would."""
    await asyncio.sleep(seconds)
    return seconds


KINDS = {"io": fetch, "cpu": burn_cpu, "coro": call_api}


@dataclass(frozen=True)
class Job:
    """One task of the workload: when it arrives, what it does, how urgent it is."""

    at: float
    kind: str
    priority: int
    seconds: float
    name: str


def workload(quick: bool = False, seed: int = 8) -> list[Job]:
    """The demo's jobs, in arrival order (deterministic for a *seed*).

    A LOW batch at the start (and, in the full run, a second one midway)
    fills every pool; a steady stream of mixed priorities follows; CRITICAL
    alerts of each kind arrive at fixed moments.
    """
    rng = random.Random(seed)
    scale = 0.3 if quick else 1.0  # task lengths
    span = 2.0 if quick else 14.0  # seconds of arrivals
    step = 0.06 if quick else 0.16  # mean gap between stream arrivals
    batch = {"io": 14, "cpu": 3, "coro": 14} if quick else {"io": 24, "cpu": 4, "coro": 18}
    specs: list[tuple[float, str, int, float]] = []

    def length(kind: str) -> float:
        low, high = {"io": (0.3, 0.9), "cpu": (0.2, 0.5), "coro": (0.3, 0.9)}[kind]
        return round(rng.uniform(low, high) * scale, 3)

    for at in (0.0,) if quick else (0.0, span / 2):
        for kind, n in batch.items():
            specs += [(at + i * 0.01, kind, TASK_LOW, length(kind)) for i in range(n)]
    t = 0.3 * scale
    while t < span:
        kind = rng.choices(("io", "cpu", "coro"), weights=(0.5, 0.12, 0.38) if quick else (0.48, 0.14, 0.38))[0]
        priority = rng.choices((TASK_LOW, TASK_NORMAL, TASK_HIGH), weights=(0.35, 0.4, 0.25))[0]
        specs.append((round(t, 3), kind, priority, length(kind)))
        t += rng.expovariate(1 / step)
    alerts = (0.25, 0.5, 0.75) if quick else (0.2, 0.35, 0.5, 0.65, 0.8)
    for i, frac in enumerate(alerts):
        kind = ("io", "cpu", "coro")[i % 3]
        specs.append((round(span * frac, 3), kind, TASK_CRITICAL, length(kind)))
    specs.sort(key=lambda s: s[0])
    counters: dict[str, int] = {}
    jobs = []
    for at, kind, priority, seconds in specs:
        label = f"{JOB_NAMES[kind]}-{NAMES[priority].lower()}"
        counters[label] = counters.get(label, 0) + 1
        jobs.append(Job(at, kind, priority, seconds, f"{label}-{counters[label]}"))
    return jobs


# ---------------------------------------------------------------- the report


def _pct(values: Sequence[float], q: float) -> float:
    from atasker.builtin.trace.plot import percentile

    return percentile(values, q)


def summarize(tasks: Iterable[Task]) -> list[dict[str, Any]]:
    """Rows per task type and priority: count, wait p50/p95, run p50 (seconds)."""
    groups: dict[tuple[str, int], list[Task]] = {}
    for task in tasks:
        if task.time_started is None:
            continue
        groups.setdefault((task.tt, task.band), []).append(task)
    order = {tt: i for i, tt in enumerate(("thread", "mp", "dask", "coroutine"))}
    rows = []
    for (tt, band), group in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 9), BANDS.index(kv[0][1]))):
        waits = [max(0.0, t.time_started - t.time_queued - (t.delay or 0)) for t in group]  # type: ignore[operator]  # finished tasks: both stamps set
        runs = [(t.time_finished or t.time_started) - t.time_started for t in group]  # type: ignore[operator]  # started
        rows.append(
            {
                "tt": tt,
                "priority": NAMES[band],
                "tasks": len(group),
                "failed": sum(t.outcome == "failed" for t in group),
                "wait_p50": _pct(waits, 50),
                "wait_p95": _pct(waits, 95),
                "run_p50": _pct(runs, 50),
            }
        )
    return rows


def format_summary(rows: list[dict[str, Any]]) -> str:
    """The summary rows as an aligned text table."""
    lines = [f"  {'task type':<10}{'priority':<10}{'tasks':>6}{'wait p50':>10}{'wait p95':>10}{'run p50':>9}"]
    previous = None
    for row in rows:
        tt = row["tt"] if row["tt"] != previous else ""
        previous = row["tt"]
        lines.append(
            f"  {tt:<10}{row['priority']:<10}{row['tasks']:>6}"
            f"{row['wait_p50']:>9.2f}s{row['wait_p95']:>9.2f}s{row['run_p50']:>8.2f}s"
            + (f"  ({row['failed']} failed)" if row["failed"] else "")
        )
    return "\n".join(lines)


def _verdict(rows: list[dict[str, Any]]) -> list[str]:
    """What the numbers show, per task type, in words (only what holds)."""
    out = []
    for tt in dict.fromkeys(r["tt"] for r in rows):
        p50 = {r["priority"]: r["wait_p50"] for r in rows if r["tt"] == tt}
        ranked = [name for name in ("CRITICAL", "HIGH", "NORMAL", "LOW") if name in p50]
        ordered = all(p50[a] <= p50[b] + 0.005 for a, b in itertools.pairwise(ranked))
        chain = " <= ".join(f"{name} {p50[name]:.2f}s" for name in ranked)
        out.append(f"  {tt:<10} median wait {chain}" + ("  (priority order holds)" if ordered else ""))
    return out


def _explain(cpu_tt: str) -> None:
    print("atasker demo: a mixed workload through deliberately small pools")
    for kind, tt in (("io", "thread"), ("cpu", cpu_tt), ("coro", "coroutine")):
        p = POOLS.get(tt, POOLS["mp"])
        size, normal, high = p["pool_size"], p["reserve_normal"], p["reserve_high"]
        unit = ("worker" if kind == "cpu" else "slot") + ("s" if size != 1 else "")
        critical = (
            "CRITICAL takes the next free worker, ahead of everything"
            if kind == "cpu"
            else "CRITICAL always starts at once (the pool grows)"
        )
        what = {"io": "I/O-bound", "cpu": "CPU-bound", "coro": "coroutines"}[kind]
        print(f"  {tt:<10} pool_size={size} reserve_normal={normal} reserve_high={high}  ({JOB_NAMES[kind]}: {what})")
        print(f"  {'':<10} LOW may use {size} {unit}, NORMAL {size + normal}, HIGH {size + normal + high}; {critical}")
    print("  a waiting task blocks every less urgent one behind it, so LOW work cannot eat the reserves\n")


# -------------------------------------------------------------------- the run


def run_demo(
    quick: bool = False,
    engine: str = "local",
    out: str | os.PathLike[str] = DEFAULT_OUT,
    plugins: Sequence[Any] = (),
    live_options: dict[str, Any] | None = None,
) -> int:
    """Run the demo; returns a process exit code.

    :param quick: the short version (a few seconds).
    :param engine: ``"local"`` (process pool) or ``"dask"`` (the CPU-bound
        tasks run on task type ``"dask"``, from the ``atasker-dask`` plugin).
    :param out: folder for ``trace.json`` and ``timeline.png`` (created).
    :param plugins: extra plugins for the demo's supervisor.
    :param live_options: passed to :meth:`TaskSupervisor.live`.
    """
    if engine not in ("local", "dask"):
        print(f"atasker demo: unknown engine {engine!r}; use 'local' or 'dask'", file=sys.stderr)
        return 2
    cpu_tt = "dask" if engine == "dask" else "mp"
    # The LOW batch waits for seconds on purpose: no start-time warnings.
    threads = POOLS["thread"]
    sup = TaskSupervisor(
        threads["pool_size"],
        threads["reserve_normal"],
        threads["reserve_high"],
        name="demo",
        plugins=plugins,
        timeout_warning=300,
        timeout_critical=600,
    )
    if cpu_tt not in sup.task_types():
        print(
            "atasker demo --engine dask: no plugin provides the 'dask' task type.\n"
            "  Install the Dask plugin from this repository: pip install ./plugins/atasker-dask\n"
            "  (it brings dask[distributed]; the demo then runs its CPU-bound tasks on a local\n"
            "  Dask cluster), or run make demo-dask.",
            file=sys.stderr,
        )
        return 2
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trace_file = out / "trace.json"
    png_file = out / "timeline.png"
    jobs = workload(quick)
    _explain(cpu_tt)
    print(
        f"{len(jobs)} tasks arrive over {jobs[-1].at:.0f}s: "
        + ", ".join(
            f"{sum(j.kind == k for j in jobs)} {JOB_NAMES[k]} ({TASK_TYPES[k] if k != 'cpu' else cpu_tt})"
            for k in ("io", "cpu", "coro")
        )
        + f", {sum(j.priority == TASK_CRITICAL for j in jobs)} of them CRITICAL\n",
        flush=True,
    )

    t_start = time.monotonic()
    sup.start(trace=trace_file)
    sup.set_pool(cpu_tt, **POOLS["mp"])
    sup.set_coroutine_pool(**POOLS["coroutine"])
    if cpu_tt == "mp":
        sup.create_mp_pool()  # start the worker now, not with the first task
    tasks: list[Task] = []
    options = {"plain_interval": 1.0 if quick else 3.0, "title": "demo", **(live_options or {})}
    try:
        with sup.live(total=len(jobs), **options):
            try:
                t0 = time.monotonic()
                for job in jobs:
                    # Pacing the arrivals, as users would: not synchronisation.
                    delay = t0 + job.at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    tt = cpu_tt if job.kind == "cpu" else TASK_TYPES[job.kind]
                    tasks.append(
                        sup.submit(KINDS[job.kind], (job.seconds,), tt=tt, priority=job.priority, name=job.name)
                    )
                for task in tasks:
                    task.exception(timeout=120)
            except KeyboardInterrupt:
                # Ctrl-C: stop() cancels the queue and says what it waits
                # for (a second Ctrl-C aborts) while the view keeps drawing.
                sup.stop()
                raise
    finally:
        sup.stop()
    elapsed = time.monotonic() - t_start

    rows = summarize(tasks)
    print(f"\n{len(tasks)} tasks in {elapsed:.1f}s; wait for a slot and run time, per task type and priority:")
    print(format_summary(rows))
    print("\nwhat it shows:")
    verdict = _verdict(rows)
    for line in verdict:
        print(line)
    if all(line.endswith("(priority order holds)") for line in verdict):
        print("  CRITICAL started at once; HIGH used its reserve and overtook NORMAL, NORMAL overtook LOW;")
        print("  the LOW batch arrived first and still waited longest.")
    print()

    print(f"trace:    {trace_file}  (open it in https://ui.perfetto.dev or chrome://tracing)")
    try:
        from atasker.builtin.trace.plot import PlotDependencyError, plot_trace

        plot_trace(trace_file, png_file, title=f"atasker demo{' --quick' if quick else ''}: {len(tasks)} tasks")
        print(f"timeline: {png_file}")
    except PlotDependencyError as exc:
        print(f"timeline: not drawn -- {exc}")
    print(f"\nwritten to {out.resolve()}/")
    return 0
