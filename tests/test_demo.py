"""``atasker demo`` (atasker.tools.demo): the showcase runs, reports and draws."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import pytest

from atasker.core.task import TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL
from atasker.tools.demo import JOB_NAMES, POOLS, burn_cpu, run_demo, workload

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_quick_demo_runs_in_a_few_seconds(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "atasker", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    # The explanation of priorities and reserves, the live view's lines
    # (stdout is a pipe: plain lines), the summary table, the files.
    assert "thread     pool_size=3 reserve_normal=1 reserve_high=1  (fetch: I/O-bound)" in text
    assert "LOW may use 3 slots, NORMAL 4, HIGH 5; CRITICAL" in text
    assert "still waiting for a slot" not in proc.stderr  # the demo's LOW waits are on purpose
    assert "CRITICAL always starts at once (the pool grows)" in text
    assert re.search(r"\[demo +\d+\.\ds final\] done (\d+)/\1 \(100%\)", text)
    assert "thread: running 0 (pool 3 +1N +1H" in text
    assert re.search(r"task type priority +tasks +wait p50 +wait p95 +run p50", text)
    for tt in ("thread", "mp", "coroutine"):
        assert re.search(rf"^  {tt} +CRITICAL +\d+ +0\.0\ds", text, re.M), tt
    assert "median wait CRITICAL" in text
    n = int(re.search(r"^(\d+) tasks in [\d.]+s", text, re.M).group(1))
    assert n == len(workload(quick=True))
    assert f"trace:    {out / 'trace.json'}" in text
    events = json.loads((out / "trace.json").read_text())
    spans = [e for e in events if e["ph"] == "X"]
    assert len(spans) == n
    assert {e["args"]["tt"] for e in spans} == {"thread", "mp", "coroutine"}
    assert {e["cat"] for e in spans} == {"CRITICAL", "HIGH", "NORMAL", "LOW"}
    if importlib.util.find_spec("matplotlib") is None:
        assert "timeline: not drawn -- atasker plot needs matplotlib" in text
        pytest.skip("matplotlib is not installed (pip install 'atasker[plot]'): the timeline is not checked")
    assert f"timeline: {out / 'timeline.png'}" in text
    png = (out / "timeline.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 30_000


def test_engine_dask_without_the_plugin_says_what_to_install(tmp_path, capsys):
    assert run_demo(quick=True, engine="dask", out=tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "no plugin provides the 'dask' task type" in err and "pip install ./plugins/atasker-dask" in err
    assert not (tmp_path / "x").exists()
    assert run_demo(engine="spark", out=tmp_path / "x") == 2
    assert "unknown engine" in capsys.readouterr().err


@pytest.mark.slow
def test_engine_dask_runs_the_cpu_bound_tasks_on_a_real_local_cluster(tmp_path, capsys):
    atasker_dask = pytest.importorskip(
        "atasker_dask", reason="needs plugins/atasker-dask (pip install -e plugins/atasker-dask)"
    )

    out = tmp_path / "demo"
    assert (
        run_demo(quick=True, engine="dask", out=out, plugins=[atasker_dask], live_options={"plain_interval": 60}) == 0
    )
    text = capsys.readouterr().out
    assert "dask       pool_size=1" in text and re.search(r"^  dask +CRITICAL", text, re.M)
    assert re.search(r"^  dask +median wait CRITICAL .*\(priority order holds\)", text, re.M)
    events = json.loads((out / "trace.json").read_text())
    by_tt = {e["args"]["tt"] for e in events if e["ph"] == "X"}
    assert by_tt == {"thread", "dask", "coroutine"}
    names = {e["name"] for e in events if e["ph"] == "X" and e["args"]["tt"] == "dask"}
    assert names and all(name.startswith("crunch-") for name in names)


def test_workload_is_deterministic_and_mixed():
    quick, full = workload(quick=True), workload()
    assert quick == workload(quick=True)
    assert [j.at for j in quick] == sorted(j.at for j in quick)
    assert quick[-1].at < 3 and 10 < full[-1].at < 40
    for jobs in (quick, full):
        assert {j.kind for j in jobs} == set(JOB_NAMES)
        assert {j.priority for j in jobs} == {TASK_CRITICAL, TASK_HIGH, TASK_NORMAL, TASK_LOW}
        assert 1 <= sum(j.priority == TASK_CRITICAL for j in jobs) <= 6
        assert len({j.name for j in jobs}) == len(jobs)
        assert jobs[0].priority == TASK_LOW  # the LOW batch arrives first
    assert POOLS["thread"] == {"pool_size": 3, "reserve_normal": 1, "reserve_high": 1}


def test_burn_cpu_burns_cpu_time():
    assert burn_cpu(0.0) == 0
    assert burn_cpu(0.01) >= 200


def test_ctrl_c_in_the_demo_cancels_the_queue_and_the_live_view_draws_to_the_end(tmp_path):
    import signal

    from tests.conftest import WAIT

    # As from a terminal: SIGINT may be ignored when the suite runs in the background.
    launcher = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        f"sys.argv = ['atasker', 'demo', '--quick', '--out', {str(tmp_path / 'demo')!r}]; "
        "runpy.run_module('atasker', run_name='__main__')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        lines = []
        for line in proc.stdout:  # the first line of the live view: tasks are running and queued
            lines.append(line)
            if line.startswith("[demo "):
                break
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=WAIT)
        assert proc.returncode == 130, "".join(lines) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    after = rest.splitlines()
    said = [i for i, line in enumerate(after) if line.startswith("atasker: interrupted: cancelling")]
    assert said, rest
    assert "press Ctrl-C again to abort them" in after[said[0]]
    # The view is still drawn after the interrupt: its final line comes after the notice.
    assert any(re.match(r"\[demo +[\d.]+s final\]", line) for line in after[said[0] :]), rest
    assert after[-1] == "atasker demo: interrupted"
    assert "Traceback" not in rest
