"""Cost of lifecycle hooks on thread-task throughput.

Run: ``python bench/bench_hooks.py [--quick]``.

Same workload as bench_threads' throughput (trivial tasks, 8 workers),
interleaved rounds, medians; each variant is the same supervisor with one
plugin on (``none``: all off):

* ``none``        -- no plugin implements a lifecycle hook (the default);
* ``forced``      -- the same, but the three task hooks are called anyway
                     (pluggy with no implementation): what skipping saves;
* ``noop``        -- a plugin implements every lifecycle hook, doing nothing;
* ``logging``     -- a plugin logs every event on a logger (level INFO,
                     handler to a null stream), a realistic observer;
* ``otel-api``    -- plugins/atasker-otel with the OpenTelemetry API alone
                     (no SDK set up: what installing it costs an app that
                     does not trace);
* ``otel-sdk``    -- the same with an SDK tracer provider whose spans go to
                     an in-memory exporter (cleared every round): a span per
                     task, made current in the pool thread;
* ``prometheus``  -- plugins/atasker-prometheus counting into a registry.

The plugin variants are left out, with a note, when their package (or the
SDK) is not installed.  Prints tasks/s and its ratio to ``none``, the CPU
time per task (median and range) and the cost: CPU microseconds per task
over ``none`` (robust on a busy machine, where wall-clock throughput is not).
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import sys
import time
from concurrent.futures import wait
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atasker import TaskSupervisor, hookimpl


def noop() -> None:
    return None


class NoopObserver:
    @hookimpl
    def atasker_task_queued(self, task):
        pass

    @hookimpl
    def atasker_task_started(self, task):
        pass

    @hookimpl
    def atasker_task_finished(self, task):
        pass

    @hookimpl
    def atasker_supervisor_started(self, supervisor):
        pass

    @hookimpl
    def atasker_supervisor_stopped(self, supervisor):
        pass


class LoggingObserver:
    def __init__(self) -> None:
        self.log = logging.getLogger("bench.observer")
        self.log.propagate = False
        self.log.setLevel(logging.INFO)
        # One handler, not one more per round (the logger is global).
        self.log.handlers = [logging.StreamHandler(io.StringIO())]

    @hookimpl
    def atasker_task_queued(self, task):
        self.log.info("queued %s %s", task.id, task.name)

    @hookimpl
    def atasker_task_started(self, task):
        self.log.info("started %s %s", task.id, task.name)

    @hookimpl
    def atasker_task_finished(self, task):
        self.log.info("finished %s %s %s", task.id, task.name, task.outcome)

    @hookimpl
    def atasker_supervisor_started(self, supervisor):
        self.log.info("supervisor started")

    @hookimpl
    def atasker_supervisor_stopped(self, supervisor):
        self.log.info("supervisor stopped")


def plugin_variants() -> dict[str, tuple[list[Any], dict[str, Any]]]:
    """``{variant: (plugins, start options)}`` of the installed plugin packages."""
    variants: dict[str, tuple[list[Any], dict[str, Any]]] = {}
    try:
        import atasker_otel
    except ImportError:
        print("(atasker-otel is not installed: no otel variants)")
    else:
        variants["otel-api"] = ([atasker_otel], {})
        try:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        except ImportError:
            print("(opentelemetry-sdk is not installed: no otel-sdk variant)")
        else:
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(EXPORTED.setdefault("otel", InMemorySpanExporter())))
            variants["otel-sdk"] = ([atasker_otel], {"otel_tracer_provider": provider})
    try:
        import atasker_prometheus
        from prometheus_client import CollectorRegistry
    except ImportError:
        print("(atasker-prometheus is not installed: no prometheus variant)")
    else:
        variants["prometheus"] = ([atasker_prometheus], {"prometheus_registry": CollectorRegistry()})
    return variants


#: The in-memory span exporter of the otel-sdk variant (cleared every round).
EXPORTED: dict[str, Any] = {}
PLUGIN_VARIANTS: dict[str, tuple[list[Any], dict[str, Any]]] = {}


def throughput(variant: str, n: int) -> tuple[float, float]:
    """``(tasks per second, CPU microseconds per task)`` of one round.

    CPU time (every thread of this process, up to the end of ``stop()``)
    is what the hooks add; unlike wall time it does not count other
    processes on a busy machine.
    """
    plugins, options = PLUGIN_VARIANTS.get(variant, ([], {}))
    plugins = {"noop": [NoopObserver()], "logging": [LoggingObserver()]}.get(variant, plugins)
    sup = TaskSupervisor(pool_size=8, reserve_normal=0, reserve_high=0, autoload=False, plugins=plugins)
    sup.start(**options)
    if variant == "forced":
        hook = sup.plugin_manager.hook
        dispatch = sup._dispatch  # the observer callers the supervisor caches (see PluginManager.observer)
        dispatch.on_queued = lambda task: hook.atasker_task_queued(task=task)
        dispatch.on_started = lambda task: hook.atasker_task_started(task=task)
        dispatch.on_finished = lambda task: hook.atasker_task_finished(task=task)
    sup.submit(noop).result()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    wait([sup.submit(noop) for _ in range(n)])
    elapsed = time.perf_counter() - t0
    sup.stop()  # the last tasks' finished hooks, counted too
    cpu = time.process_time() - cpu0
    if "otel" in EXPORTED:
        EXPORTED["otel"].clear()
    return n / elapsed, cpu / n * 1e6


def hook_cost(variant: str, n: int) -> float:
    """Microseconds per task of the hook calls alone, in one thread: what the
    dispatcher calls for a task (wrap, queued, started, finished) on a done task."""
    plugins, options = PLUGIN_VARIANTS.get(variant, ([], {}))
    plugins = {"noop": [NoopObserver()], "logging": [LoggingObserver()]}.get(variant, plugins)
    sup = TaskSupervisor(pool_size=8, reserve_normal=0, reserve_high=0, autoload=False, plugins=plugins)
    sup.start(**options)
    task = sup.submit(noop)
    task.result()
    sup.stop()
    dispatch = sup._dispatch  # the callers the supervisor caches, as submit() and the dispatcher use them
    calls = [c for c in (dispatch.on_queued, dispatch.on_started, dispatch.on_finished) if c is not None]
    wrap = dispatch.wrap_call if dispatch.call_wrappers else None
    t0 = time.perf_counter()
    for _ in range(n):
        if wrap is not None:
            task.func = noop
            wrap(task)
        for call in calls:
            call(task)
    elapsed = time.perf_counter() - t0
    if "otel" in EXPORTED:
        EXPORTED["otel"].clear()
    return elapsed / n * 1e6


def sdk_span_cost(n: int) -> float:
    """Microseconds per span the SDK itself takes for what otel-sdk records: a
    span with the plugin's attributes, set at start and at the end, ended."""
    _, options = PLUGIN_VARIANTS["otel-sdk"]
    tracer = options["otel_tracer_provider"].get_tracer("bench")
    start = {"atasker.task.id": 1, "atasker.task.type": "thread", "atasker.task.priority": 100}
    start |= {"atasker.task.priority_band": "NORMAL", "atasker.supervisor": "supervisor"}
    end = {"atasker.task.outcome": "completed", "atasker.task.queue_wait": 1e-5, "atasker.task.run_time": 1e-5}
    t0 = time.perf_counter()
    for _ in range(n):
        span = tracer.start_span("noop", attributes=start)
        span.set_attributes(end)
        span.end()
    elapsed = time.perf_counter() - t0
    EXPORTED["otel"].clear()
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    n = 5000 if opts.quick else 20000
    rounds = 3 if opts.quick else 9
    PLUGIN_VARIANTS.update(plugin_variants())
    variants = ["none", "forced", "noop", "logging", *PLUGIN_VARIANTS]
    samples: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            tput, cpu_per_task = throughput(v, n)
            samples[v].append(tput)
            cpu[v].append(cpu_per_task)
    base = statistics.median(samples["none"])
    base_cpu = statistics.median(cpu["none"])
    print(f"lifecycle hooks, {n} thread tasks, 8 workers, median of {rounds} (cost: CPU time per task over 'none')")
    for v in variants:
        tput = statistics.median(samples[v])
        c = statistics.median(cpu[v])
        spread = f"{min(cpu[v]):.1f}-{max(cpu[v]):.1f}"
        print(
            f"  {v:<10} {tput:>9,.0f} tasks/s  ratio {tput / base:.2f}x  "
            f"cpu {c:6.1f} us/task ({spread})  cost {c - base_cpu:+6.1f} us/task"
        )
    alone: dict[str, list[float]] = {v: [] for v in variants if v != "forced"}
    if "otel-sdk" in PLUGIN_VARIANTS:
        alone["sdk span"] = []  # the peer: what the SDK itself costs for one such span, without atasker
    for _ in range(rounds):  # interleaved, as above
        for v, costs in alone.items():
            costs.append(sdk_span_cost(n) if v == "sdk span" else hook_cost(v, n))
    hooks = {v: statistics.median(costs) for v, costs in alone.items()}
    print(f"the hook calls alone, one thread, {n} calls of each, median of {rounds}")
    for v, us in hooks.items():
        print(f"  {v:<10} {us:6.2f} us/task")
    if "sdk span" in hooks:
        plugin = hooks["otel-sdk"] - hooks["sdk span"]
        print(f"  otel-sdk is the SDK's span ({hooks['sdk span']:.2f} us) plus {plugin:+.2f} us of the plugin")


if __name__ == "__main__":
    main()
