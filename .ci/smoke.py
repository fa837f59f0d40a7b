"""Smoke test of installed wheels (run by .ci/wheel-smoke in a fresh venv,
from a temporary directory, so that nothing comes from the repo).

Checks: atasker is 1.x and imported from site-packages; a thread, a process
and a coroutine task; a map over process tasks; ``as_executor().map``; a
task of the subprocess plugin; a supervisor with the fairshare queue policy;
the otel plugin carries a trace context into a process task (the
OpenTelemetry API alone, as installed); the prometheus plugin's metrics
scraped over HTTP; ``python -m atasker plugins`` lists the installed plugins
(subprocess, fairshare, dask, otel, prometheus) and not the test plugin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig

TIMEOUT = 30


def square(x: int) -> int:
    return x * x


def pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


async def add(a: int, b: int) -> int:
    return a + b


def current_trace_id() -> int:
    from opentelemetry import trace

    return trace.get_current_span().get_span_context().trace_id


def check_otel() -> None:
    """The API alone (no SDK): a trace the submitter joined reaches a worker process."""
    from opentelemetry import context, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from atasker import TT_MP, TaskSupervisor

    sup = TaskSupervisor(name="smoke-otel")
    sup.start()
    try:
        check(sup.plugin_manager.has_plugin("otel"), "otel plugin loaded by its entry point")
        remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        token = context.attach(trace.set_span_in_context(NonRecordingSpan(remote)))
        try:
            task = sup.submit(current_trace_id, tt=TT_MP)
        finally:
            context.detach(token)
        check(task.result(timeout=TIMEOUT) == 0xABC, "otel: the W3C trace context reaches a process task")
    finally:
        sup.stop()


def check_prometheus() -> None:
    """Metrics of a known workload, scraped from /metrics over HTTP."""
    import urllib.request

    from prometheus_client import CollectorRegistry, start_http_server

    from atasker import TaskSupervisor

    registry = CollectorRegistry()
    sup = TaskSupervisor(name="smoke-prometheus")
    sup.start(prometheus_registry=registry)
    try:
        for t in [sup.submit(square, (i,)) for i in range(5)]:
            t.result(timeout=TIMEOUT)
    finally:
        sup.stop()
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=TIMEOUT) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    lines = [line for line in text.splitlines() if line.startswith("atasker_tasks_finished_total{")]
    check(
        len(lines) == 1 and 'supervisor="smoke-prometheus"' in lines[0] and lines[0].endswith(" 5.0"),
        f"prometheus: 5 finished tasks scraped from /metrics {lines}",
    )


def check(condition: bool, what: str) -> None:
    if not condition:
        sys.exit(f"smoke: FAILED: {what}")
    print(f"smoke: ok  {what}")


def main() -> None:
    import atasker
    from atasker import TT_COROUTINE, TT_MP, TaskSupervisor, background_task, task_supervisor

    site = os.path.realpath(sysconfig.get_paths()["purelib"])
    where = os.path.realpath(atasker.__file__)
    check(atasker.__version__.startswith("1."), f"atasker.__version__ {atasker.__version__} is 1.x")
    check(where.startswith(site + os.sep), f"atasker imported from the venv's site-packages ({where})")

    try:
        check(background_task(square)(7).result(timeout=TIMEOUT) == 49, "thread task")
        pid, value = background_task(pid_and_square, tt=TT_MP)(8).result(timeout=TIMEOUT)
        check(value == 64 and pid != os.getpid(), "process task (in another process)")
        check(background_task(add, tt=TT_COROUTINE)(2, 3).result(timeout=TIMEOUT) == 5, "coroutine task")
        with task_supervisor.as_executor(tt=TT_MP) as face:
            check(list(face.map(square, range(6), chunksize=4)) == [0, 1, 4, 9, 16, 25], "Executor face (map)")
        mapped = list(task_supervisor.map(square, range(100), tt=TT_MP, timeout=TIMEOUT))
        check(mapped == [x * x for x in range(100)], "map over process tasks (atasker.extras.batch in the wheel)")
        done = background_task(lambda: [sys.executable, "-c", "print('from a child')"], tt="subprocess")()
        result = done.result(timeout=TIMEOUT)
        check(result.returncode == 0 and result.stdout.strip() == "from a child", "subprocess-plugin task")
    finally:
        task_supervisor.stop()

    sup = TaskSupervisor(queue_policy="fairshare", name="smoke-fairshare")
    sup.start()
    try:
        tasks = [sup.submit(square, (i,), name=f"job-{i % 3}") for i in range(9)]
        check([t.result(timeout=TIMEOUT) for t in tasks] == [i * i for i in range(9)], "fairshare-policy supervisor")
    finally:
        sup.stop()

    check_otel()
    check_prometheus()

    out = subprocess.run(
        [sys.executable, "-m", "atasker", "plugins", "--json"], capture_output=True, text=True, timeout=120
    )
    check(out.returncode == 0, f"python -m atasker plugins exits 0 {out.stderr.strip()}")
    info = json.loads(out.stdout)
    dists = {p["distribution"]: p["version"] for p in info["plugins"] if p["distribution"]}
    broken = [p["name"] for p in info["plugins"] if p["error"]]
    print(f"smoke:     plugins from distributions: {dists}")
    check(not broken, f"no broken plugins {broken}")
    for dist in ("atasker-subprocess", "atasker-fairshare", "atasker-dask", "atasker-otel", "atasker-prometheus"):
        check(dists.get(dist, "").startswith("1."), f"{dist} 1.x is loaded")
    check({"subprocess", "dask"} <= set(info["task_types"]), "task types subprocess and dask are registered")
    check("fairshare" in info["queue_policies"], "queue policy fairshare is registered")
    check(
        "testecho" not in info["task_types"] and "atasker-testplugin" not in dists,
        "the test plugin (testecho) is not installed",
    )
    text = subprocess.run([sys.executable, "-m", "atasker", "plugins"], capture_output=True, text=True, timeout=120)
    check(text.returncode == 0 and "testecho" not in text.stdout, "plain listing has no testecho")
    print("smoke: all passed")


if __name__ == "__main__":
    main()
