"""Task timeline traces (atasker.builtin.trace) and their PNG (atasker.builtin.trace.plot)."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import textwrap
import threading
from collections import defaultdict
from pathlib import Path

import pytest

from atasker import TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL
from atasker.builtin.trace import PLUGIN_NAME, TRACE_CNAMES, TraceRecorder, get_recorder, trace_path
from atasker.builtin.trace.plot import PlotDependencyError, load_trace, percentile, plot_trace, wait_stats
from atasker.tools.cli import main as cli_main
from tests.conftest import WAIT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = {TASK_CRITICAL: "CRITICAL", TASK_HIGH: "HIGH", TASK_NORMAL: "NORMAL", TASK_LOW: "LOW"}


def read_events(path: Path) -> list[dict]:
    events = json.loads(path.read_text())  # valid JSON: the array is closed
    assert isinstance(events, list)
    for event in events:
        assert event["ph"] in ("X", "i", "M"), event
        assert isinstance(event["pid"], int) and isinstance(event["tid"], int)
        if event["ph"] != "M":
            assert isinstance(event["ts"], (int, float)) and event["ts"] >= 0
    return events


def slices(events: list[dict]) -> list[dict]:
    return [e for e in events if e["ph"] == "X"]


def assert_no_overlap(events: list[dict]) -> dict[tuple[int, int], list[dict]]:
    """No two slices on one slot track overlap (1 us rounding allowed)."""
    tracks: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for s in slices(events):
        tracks[(s["pid"], s["tid"])].append(s)
    for track in tracks.values():
        track.sort(key=lambda s: s["ts"])
        for a, b in itertools.pairwise(track):
            assert b["ts"] >= a["ts"] + a["dur"] - 1.0, (a, b)
    return tracks


def metadata(events: list[dict], name: str) -> dict[tuple[int, int], str]:
    return {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == name}


# ------------------------------------------------------------------ the trace


def test_trace_has_one_slice_per_task_with_priorities_and_slots(make_supervisor, tmp_path):
    path = tmp_path / "run.json"
    sup = make_supervisor(start=False, pool_size=2, reserve_normal=1, reserve_high=1)
    sup.start(trace=path)
    gate = threading.Event()
    # Two LOW fill the pool; NORMAL and HIGH take the reserves; CRITICAL grows
    # the pool; the rest queue behind them.
    order = [TASK_LOW, TASK_LOW, TASK_NORMAL, TASK_HIGH, TASK_CRITICAL, TASK_LOW, TASK_NORMAL, TASK_HIGH, 75]
    tasks = [sup.submit(gate.wait, (WAIT,), priority=p, name=f"t{i}") for i, p in enumerate(order)]
    info = sup.get_info()["task_types"]["thread"]
    assert info["running"] == 5 and sum(info["waiting"].values()) == 4
    gate.set()
    for task in tasks:
        assert task.result(WAIT) is True
    assert sup.stop()

    events = read_events(path)
    got = {s["args"]["id"]: s for s in slices(events)}
    assert sorted(got) == sorted(t.id for t in tasks), "one complete slice per task"
    for task in tasks:
        s = got[task.id]
        band = task.band
        assert s["name"] == task.name
        assert s["cat"] == NAMES[band] and s["cname"] == TRACE_CNAMES[band]
        assert s["args"]["priority"] == task.priority and s["args"]["tt"] == "thread"
        assert s["args"]["outcome"] == "completed"
        assert s["dur"] >= 0 and s["args"]["wait_ms"] >= 0
        assert abs(s["args"]["wait_ms"] / 1e3 - (task.time_started - task.time_queued)) < 1e-3
    # The four queued tasks waited until the gate opened; the first five did not.
    assert all(got[t.id]["args"]["wait_ms"] < got[tasks[5].id]["args"]["wait_ms"] for t in tasks[:5])
    assert got[tasks[8].id]["cat"] == "NORMAL"  # priority 75 is in the NORMAL band

    tracks = assert_no_overlap(events)
    processes = metadata(events, "process_name")
    threads = metadata(events, "thread_name")
    assert processes == {(1, 0): "thread"}
    assert {tid for _, tid in tracks} == set(range(1, 6)), "five ran at once: slots 1..5"
    assert all(threads[key] == f"slot {key[1]}" for key in tracks)
    # The first event says where the trace's time 0 is.
    head = events[0]
    assert head["name"] == "atasker trace" and head["args"]["epoch"] > 0 and head["args"]["supervisor"] == sup.name


def test_slices_never_overlap_on_a_slot_under_load(make_supervisor, tmp_path):
    path = tmp_path / "run.json"
    sup = make_supervisor(start=False, pool_size=3, reserve_normal=0, reserve_high=0)
    sup.start(trace=path)
    tasks = [sup.submit(sum, ([i, 1],), priority=TASK_LOW) for i in range(600)]
    for task in tasks:
        task.result(WAIT)
    sup.stop()
    events = read_events(path)
    assert len(slices(events)) == 600
    tracks = assert_no_overlap(events)
    # As a rule 3 slots; a hook delayed longer than other tasks' whole runs
    # (microsecond tasks, a busy machine) may open an extra one.
    assert {1, 2, 3} <= {tid for _, tid in tracks}


def test_the_slot_a_task_frees_goes_to_the_task_it_makes_room_for(make_supervisor, tmp_path):
    # task_done announces the successor before the finished hook of the task
    # that made room: the successor must still get the freed slot.
    path = tmp_path / "run.json"
    sup = make_supervisor(start=False, pool_size=2, reserve_normal=0, reserve_high=0)
    sup.start(trace=path)
    gates = {name: threading.Event() for name in "abcd"}
    running = {name: threading.Event() for name in "abcd"}

    def work(name):
        running[name].set()
        return gates[name].wait(WAIT)

    tasks = {name: sup.submit(work, (name,), name=name) for name in "abcd"}
    for first, then in (("a", "c"), ("b", "d"), ("c", None), ("d", None)):
        assert running[first].wait(WAIT)
        gates[first].set()
        if then:
            assert running[then].wait(WAIT)
    for task in tasks.values():
        assert task.result(WAIT) is True
    sup.stop()
    got = {s["name"]: s["tid"] for s in slices(read_events(path))}
    assert got == {"a": 1, "b": 2, "c": 1, "d": 2}
    # One slot: every task on slot 1.
    path = tmp_path / "serial.json"
    sup = make_supervisor(start=False, pool_size=1, reserve_normal=0, reserve_high=0)
    sup.start(trace=path)
    for task in [sup.submit(int) for _ in range(200)]:
        task.result(WAIT)
    sup.stop()
    assert {s["tid"] for s in slices(read_events(path))} == {1}


def test_each_task_type_is_a_process_with_its_own_slots(make_supervisor, tmp_path):
    path = tmp_path / "run.json"
    sup = make_supervisor(start=False, pool_size=2)
    sup.start(trace=path)
    sup.set_coroutine_pool(2, 0, 0)

    async def nap(x):
        await asyncio.sleep(0.001)
        return x

    tasks = [sup.submit(nap, (i,), tt="coroutine", priority=TASK_HIGH) for i in range(6)]
    tasks += [sup.submit(abs, (-i,)) for i in range(4)]
    tasks.append(sup.submit(pow, (2, 5), tt="mp", priority=TASK_CRITICAL))
    for task in tasks:
        task.result(WAIT)
    sup.stop()
    events = read_events(path)
    processes = {name: pid for (pid, _), name in metadata(events, "process_name").items()}
    assert set(processes) == {"coroutine", "thread", "mp"}
    by_tt = defaultdict(list)
    for s in slices(events):
        assert s["pid"] == processes[s["args"]["tt"]]
        by_tt[s["args"]["tt"]].append(s)
    assert (len(by_tt["coroutine"]), len(by_tt["thread"]), len(by_tt["mp"])) == (6, 4, 1)
    assert {s["tid"] for s in by_tt["coroutine"]} <= {1, 2}
    assert by_tt["mp"][0]["cat"] == "CRITICAL" and by_tt["mp"][0]["tid"] == 1
    assert_no_overlap(events)


def test_failed_and_cancelled_tasks(make_supervisor, tmp_path):
    path = tmp_path / "run.json"
    sup = make_supervisor(start=False, pool_size=1, reserve_normal=0, reserve_high=0)
    sup.start(trace=path)
    gate = threading.Event()
    blocker = sup.submit(gate.wait, (WAIT,), name="blocker")
    queued = sup.submit(int, name="never", priority=TASK_LOW)
    delayed = sup.submit(int, name="later", delay=WAIT)
    assert queued.cancel() and delayed.cancel()
    gate.set()
    blocker.result(WAIT)
    failing = sup.submit(lambda: 1 / 0, name="boom")
    with pytest.raises(ZeroDivisionError):
        failing.result(WAIT)
    sup.stop()
    events = read_events(path)
    by_name = {e["name"]: e for e in events if e["ph"] in ("X", "i") and e["name"] != "atasker trace"}
    assert by_name["boom"]["ph"] == "X" and by_name["boom"]["args"]["outcome"] == "failed"
    for name in ("never", "later"):
        event = by_name[name]
        assert event["ph"] == "i" and event["tid"] == 0 and event["args"]["outcome"] == "cancelled"
    assert by_name["never"]["cat"] == "LOW"
    assert metadata(events, "thread_name")[(1, 0)] == "queue"
    trace = load_trace(path)
    assert {s.name for s in trace.cancelled} == {"never", "later"}
    assert {s.name: s.outcome for s in trace.slices} == {"blocker": "completed", "boom": "failed"}


def test_memory_stays_bounded_under_load(make_supervisor, tmp_path):
    path = tmp_path / "run.json"
    recorder = TraceRecorder(path, batch=16, flush_interval=60)
    sup = make_supervisor(pool_size=4, reserve_normal=0, reserve_high=0, plugins=[recorder])
    tasks = [sup.submit(int) for _ in range(3000)]
    for task in tasks:
        task.result(WAIT)
    assert recorder.stats()["max_buffered"] == 32
    # The bound: 2 * batch, plus one event per thread appending at that
    # moment (4 pool threads and this one).
    assert 16 <= recorder.peak_buffered <= 32 + 5, "the buffer never exceeds its bound"
    sup.stop()
    assert recorder.closed and recorder.stats()["written"] == 6000  # a start and an end per task
    assert len(slices(read_events(path))) == 3000


def test_flush_writes_buffered_events_and_the_interval_flushes_too(make_supervisor, tmp_path):
    path = tmp_path / "run.json"
    recorder = TraceRecorder(path, batch=10_000, flush_interval=3600)
    sup = make_supervisor(plugins=[recorder])
    sup.submit(int, name="one").result(WAIT)
    assert recorder.flush(WAIT)
    assert '"name":"one"' in path.read_text()  # on disk before the trace is closed
    # A short interval writes buffered events without flush() or stop().
    with recorder._cond:
        recorder.flush_interval = 0.01
        recorder._cond.notify_all()  # the writer's next wait uses the new interval
    sup.submit(int, name="two").result(WAIT)
    with recorder._cond:
        assert recorder._cond.wait_for(lambda: recorder._written >= 4, WAIT)
    assert '"name":"two"' in path.read_text()
    sup.stop()
    assert [s["name"] for s in slices(read_events(path))] == ["one", "two"]


def test_tracing_is_off_and_free_by_default():
    # A fresh interpreter: no trace code imported, no observer hook registered.
    code = textwrap.dedent(
        """
        import sys
        from atasker import TaskSupervisor
        sup = TaskSupervisor(autoload=False)
        sup.start()
        assert sup.submit(pow, (2, 3)).result(10) == 8
        hooks = ("atasker_task_started", "atasker_task_finished", "atasker_task_queued")
        assert not any(sup.plugin_manager.has_impls(hook) for hook in hooks)
        sup.stop()
        assert "atasker.builtin.trace.recorder" not in sys.modules
        print("ok")
        """
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "ATASKER_TRACE"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_recorder_unregisters_itself_on_stop(make_supervisor, tmp_path):
    sup = make_supervisor(start=False)
    sup.start(trace=tmp_path / "a.json")
    recorder = get_recorder(sup)
    assert recorder is not None and sup.plugin_manager.has_impls("atasker_task_finished")
    sup.stop()
    assert recorder.closed and get_recorder(sup) is None
    assert not sup.plugin_manager.has_impls("atasker_task_started") and not sup.plugin_manager.has_impls(
        "atasker_task_finished"
    )
    # Started again, it traces again, to the new file.
    sup.start(trace=tmp_path / "b.json")
    sup.submit(int, name="second").result(WAIT)
    sup.stop()
    assert [s["name"] for s in slices(read_events(tmp_path / "b.json"))] == ["second"]
    assert slices(read_events(tmp_path / "a.json")) == []


def test_atasker_trace_environment_variable(make_supervisor, tmp_path, monkeypatch):
    monkeypatch.setenv("ATASKER_TRACE", str(tmp_path / "trace-{name}-{pid}.json"))
    sup = make_supervisor(name="env test")
    sup.submit(int, name="from-env").result(WAIT)
    sup.stop()
    path = trace_path(tmp_path / "trace-{name}-{pid}.json", "env test")
    assert path.name == f"trace-env_test-{__import__('os').getpid()}.json"
    assert [s["name"] for s in slices(read_events(path))] == ["from-env"]


def test_start_with_trace_on_a_running_supervisor_turns_tracing_on(make_supervisor, tmp_path):
    sup = make_supervisor()
    sup.submit(int).result(WAIT)  # not traced
    sup.start(trace=tmp_path / "late.json")
    recorder = get_recorder(sup)
    assert recorder is not None
    sup.start(trace=tmp_path / "late.json")  # the same file: nothing changes
    assert get_recorder(sup) is recorder
    with pytest.raises(ValueError, match="already traces"):
        sup.start(trace=tmp_path / "other.json")
    sup.submit(int, name="traced").result(WAIT)
    sup.stop()
    assert [s["name"] for s in slices(read_events(tmp_path / "late.json"))] == ["traced"]


def test_bad_trace_path_fails_start_and_leaves_the_supervisor_usable(make_supervisor, tmp_path):
    sup = make_supervisor(start=False)
    with pytest.raises(FileNotFoundError):
        sup.start(trace=tmp_path / "missing" / "run.json")
    assert not sup.is_active() and get_recorder(sup) is None
    sup.start()
    assert sup.submit(pow, (2, 2)).result(WAIT) == 4


def test_tasks_running_before_the_recorder_are_counted_not_drawn(make_supervisor, tmp_path):
    sup = make_supervisor()
    gate = threading.Event()
    early = sup.submit(gate.wait, (WAIT,))
    recorder = TraceRecorder(tmp_path / "run.json")
    sup.register_plugin(recorder, name=PLUGIN_NAME)
    gate.set()
    early.result(WAIT)
    sup.submit(int, name="seen").result(WAIT)
    sup.stop()
    assert recorder.unseen == 1
    assert [s["name"] for s in slices(read_events(tmp_path / "run.json"))] == ["seen"]


def test_recorder_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError, match="batch"):
        TraceRecorder(tmp_path / "x.json", batch=0)
    with pytest.raises(ValueError, match="flush_interval"):
        TraceRecorder(tmp_path / "x.json", flush_interval=0)


def test_a_trace_cut_short_still_loads(make_supervisor, tmp_path):
    path = tmp_path / "run.json"
    sup = make_supervisor(start=False)
    sup.start(trace=path)
    for task in [sup.submit(int, name=f"t{i}") for i in range(10)]:
        task.result(WAIT)
    sup.stop()
    text = path.read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: text.rindex('{"name":"t')] + '{"name":"t9","ph":"X","t')  # killed mid-line
    trace = load_trace(cut)
    assert trace.truncated and len(trace.slices) == 9
    assert not load_trace(path).truncated
    bad = tmp_path / "bad.json"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not a trace"):
        load_trace(bad)


# ------------------------------------------------------------------- the plot


@pytest.fixture
def demo_like_trace(make_supervisor, tmp_path) -> Path:
    """A small trace with queueing at every priority."""
    path = tmp_path / "run.json"
    sup = make_supervisor(start=False, pool_size=2, reserve_normal=1, reserve_high=1, name="plot test")
    sup.start(trace=path)
    gate = threading.Event()
    first = [sup.submit(gate.wait, (WAIT,), priority=TASK_LOW) for _ in range(2)]
    rest = [sup.submit(sum, ([i, i],), priority=p) for i, p in enumerate([TASK_LOW, TASK_NORMAL, TASK_HIGH] * 10)]
    rest.append(sup.submit(int, priority=TASK_CRITICAL))
    failing = sup.submit(lambda: 1 / 0, priority=TASK_NORMAL)
    gate.set()
    for task in first + rest:
        task.result(WAIT)
    assert isinstance(failing.exception(WAIT), ZeroDivisionError)
    sup.stop()
    return path


def test_plot_writes_a_png(demo_like_trace, tmp_path):
    pytest.importorskip("matplotlib")
    out = plot_trace(demo_like_trace, tmp_path / "timeline.png", title="test")
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 30_000


def test_plot_command(demo_like_trace, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert cli_main(["plot", str(demo_like_trace), "-o", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").read_bytes().startswith(PNG_SIGNATURE)
    assert cli_main(["plot", str(demo_like_trace)]) == 0  # default: next to the trace
    assert demo_like_trace.with_suffix(".png").read_bytes().startswith(PNG_SIGNATURE)
    assert cli_main(["plot", str(tmp_path / "nope.json")]) == 1
    assert "nope.json" in capsys.readouterr().err


def test_plot_without_matplotlib_says_how_to_install_it(demo_like_trace, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(PlotDependencyError, match=r"pip install 'atasker\[plot\]'"):
        plot_trace(demo_like_trace, tmp_path / "t.png")
    assert cli_main(["plot", str(demo_like_trace), "-o", str(tmp_path / "t.png")]) == 1
    assert "pip install 'atasker[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "t.png").exists()


def test_wait_stats_per_priority(demo_like_trace):
    trace = load_trace(demo_like_trace)
    assert trace.meta["supervisor"] == "plot test"
    assert list(trace.tracks) == ["thread"] and trace.tracks["thread"][0] == 1
    stats = wait_stats(trace.slices)
    assert list(stats) == [TASK_CRITICAL, TASK_HIGH, TASK_NORMAL, TASK_LOW]
    assert stats[TASK_CRITICAL][0] == 1 and stats[TASK_LOW][0] == 12 and stats[TASK_NORMAL][0] == 11
    for count, p50, p95 in stats.values():
        assert count > 0 and 0 <= p50 <= p95


def test_percentile():
    assert percentile([3, 1, 2], 50) == 2
    assert percentile([0, 10], 95) == pytest.approx(9.5)
    assert percentile([5], 95) == 5
    assert percentile([], 50) != percentile([], 50)  # NaN


def test_timestamps_order_a_task_and_the_one_it_made_room_for(make_supervisor):
    # The recorder places tasks by timestamps (hooks may run in another
    # order): a task admitted because another ended must carry a
    # time_started >= that one's time_finished.
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    a = sup.submit(gate.wait, (WAIT,), name="a")
    b = sup.submit(int, name="b")
    gate.set()
    b.result(WAIT)
    a.result(WAIT)
    assert b.time_started >= a.time_finished


def test_slot_allocation_follows_timestamps_not_hook_order():
    from types import SimpleNamespace

    from atasker.builtin.trace.recorder import _Slots

    def task(finished=None):
        return SimpleNamespace(time_finished=finished)

    slots = _Slots()
    t1, t3, t2 = task(), task(), task()
    assert slots.take(1, 0.0, t1) == [1]  # task 1 on slot 1 from t=0
    t1.time_finished = 0.5  # it ended at 0.5; its end event is not processed yet
    assert slots.take(3, 2.0, t3) == []  # task 3 (t=2) still gets slot 1
    # Task 2 started at t=1 but is placed after task 3: it takes slot 1
    # (free since 0.5) and task 3 moves to a new slot.
    assert slots.take(2, 1.0, t2) == [2]
    assert slots.held[2][0] == 1 and slots.held[3][0] == 2
    assert slots.release(1, 0.5) == 1  # task 1's end event: its slot, not freed twice
    assert slots.free == []
    assert slots.release(2, 3.0) == 1
    assert slots.take(4, 2.5, task()) == [3]  # slot 1 was busy until 3.0, slot 2 is task 3's
    assert slots.take(5, 3.0, task()) == []
    assert slots.held[5][0] == 1
    assert slots.release(99, 1.0) is None  # never seen
