"""The live view (atasker.tools.liveview): plain lines off a terminal, rich on one."""

from __future__ import annotations

import io
import re
import threading

import pytest

import atasker
from atasker import TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL
from atasker import live as live_module_function
from atasker.tools.liveview import LiveView, Snapshot, TaskTypeSnapshot, render_plain
from tests.conftest import WAIT

# Pool 2 + 1 NORMAL + 1 HIGH; this arrival order leaves 4 running (both
# reserves in use) and HIGH 1, NORMAL 2, LOW 3 waiting.
ARRIVALS = [TASK_LOW, TASK_LOW, TASK_NORMAL, TASK_HIGH, TASK_LOW, TASK_LOW, TASK_LOW, TASK_NORMAL, TASK_NORMAL]
ARRIVALS += [TASK_HIGH]


@pytest.fixture
def busy(make_supervisor):
    """A supervisor with tasks held on a gate; yields (supervisor, gate, tasks)."""
    sup = make_supervisor(pool_size=2, reserve_normal=1, reserve_high=1)
    gate = threading.Event()
    tasks = []

    def submit_all():
        tasks.extend(sup.submit(gate.wait, (WAIT,), priority=p) for p in ARRIVALS)

    yield sup, gate, submit_all, tasks
    gate.set()
    for task in tasks:
        task.result(WAIT)


def test_plain_lines_when_stdout_is_not_a_terminal(busy, capsys):
    sup, gate, submit_all, tasks = busy
    with sup.live(total=len(ARRIVALS), plain_interval=3600) as view:
        assert view.rich is False  # pytest captures stdout: not a terminal
        submit_all()
        snap = view.refresh()
        line = capsys.readouterr().out.strip()
        gate.set()
        for task in tasks:
            task.result(WAIT)
    final = capsys.readouterr().out.strip()

    row = snap.task_types[0]
    assert (row.tt, row.running, row.pool_size, row.normal_in_use, row.high_in_use) == ("thread", 4, 2, 1, 1)
    assert row.waiting == {TASK_HIGH: 1, TASK_NORMAL: 2, TASK_LOW: 3} and row.waiting_total == 6
    assert "done 0/10 (0%)" in line
    assert "thread: running 4 (pool 2 +1N +1H, reserves in use N 1/1 H 1/1), waiting HIGH=1 NORMAL=2 LOW=3" in line
    assert "final]" in final and "done 10/10 (100%)" in final and "waiting 0" in final
    assert view.last is not None and view.last.done == 10 and view.last.task_types[0].done == 10


def test_rich_view_on_a_forced_terminal(busy):
    rich_console = pytest.importorskip("rich.console")
    out = io.StringIO()
    console = rich_console.Console(file=out, force_terminal=True, width=140, color_system=None)
    sup, gate, submit_all, tasks = busy
    with sup.live(total=len(ARRIVALS), console=console, refresh_per_second=1) as view:
        assert view.rich is True
        submit_all()
        view.refresh()
        frame = out.getvalue()
        gate.set()
        for task in tasks:
            task.result(WAIT)
    final = out.getvalue()[len(frame) :]

    assert "\x1b[" in frame  # drawn in place with cursor movements
    for text in ("task type", "running", "reserves in use", "waiting", "tasks/s", "2 +1N +1H", "N 1/1 H 1/1"):
        assert text in frame, text
    assert re.search(r"thread\s+4\s+2 \+1N \+1H", frame)
    assert re.search(r"HIGH 1\s+NORMAL 2\s+LOW 3", frame)
    assert "0/10" in frame
    assert "10/10 100%" in final and "10 done" in final


def test_rich_missing_falls_back_to_plain_lines(busy, monkeypatch):
    sup, *_ = busy
    monkeypatch.setattr("atasker.tools.liveview._rich_available", lambda: False)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    with sup.live(file=out, plain_interval=3600) as view:
        assert view.rich is False
    assert out.getvalue().startswith("[") and "final]" in out.getvalue()
    with pytest.raises(ImportError, match=r"atasker\[live\]"):
        sup.live(plain=False).start()


def test_the_display_thread_refreshes_at_its_own_rate(make_supervisor):
    sup = make_supervisor()
    lines = threading.Semaphore(0)

    class Log(io.StringIO):
        def write(self, text):
            if text.startswith("["):
                lines.release()
            return super().write(text)

    with sup.live(file=Log(), plain_interval=0.01):
        for _ in range(3):  # three lines drawn without any refresh() call
            assert lines.acquire(timeout=WAIT)


def test_counter_plugin_is_registered_only_while_open(make_supervisor, capsys):
    sup = make_supervisor()
    before = set(sup.plugin_manager.list_name_plugin())
    assert not sup.plugin_manager.has_impls("atasker_task_finished")
    view = sup.live(plain_interval=3600)
    with view:
        assert sup.plugin_manager.has_impls("atasker_task_finished")
        sup.submit(int).result(WAIT)
    assert set(sup.plugin_manager.list_name_plugin()) == before and not sup.plugin_manager.has_impls(
        "atasker_task_finished"
    )
    assert view.last.done == 1
    with pytest.raises(RuntimeError, match="not started"):
        view.stop()
    capsys.readouterr()


def test_live_options_are_checked(make_supervisor, capsys):
    sup = make_supervisor()
    with pytest.raises(ValueError, match="total"):
        sup.live(total=-1)
    with pytest.raises(ValueError, match="refresh_per_second"):
        sup.live(refresh_per_second=0)
    view = sup.live(plain_interval=3600).start()
    with pytest.raises(RuntimeError, match="already started"):
        view.start()
    view.stop()
    capsys.readouterr()


def test_atasker_live_watches_the_global_supervisor():
    view = live_module_function(total=3)
    assert isinstance(view, LiveView) and view.supervisor is atasker.task_supervisor and view.total == 3
    assert atasker.live is live_module_function


def test_render_plain_unlimited_pool_eta_and_failures():
    row = TaskTypeSnapshot(
        tt="coroutine",
        running=7,
        pool_size=0,
        reserve_normal=0,
        reserve_high=0,
        normal_in_use=0,
        high_in_use=0,
        beyond=0,
        waiting={},
        done=5,
        failed=1,
        rate=2.5,
    )
    snap = Snapshot(name="x", elapsed=2.0, task_types=[row], done=5, failed=1, rate=2.5, total=10)
    assert snap.eta == pytest.approx(2.0)
    line = render_plain(snap)
    assert "coroutine: running 7 (pool unlimited), waiting 0, done 5 2.5/s" in line
    assert "done 5/10 (50%), 2.5 tasks/s, 1 failed, ETA 2s" in line
    assert Snapshot(name="x", elapsed=1.0, done=10, rate=3.0, total=10).eta is None
    assert Snapshot(name="x", elapsed=1.0, done=0, rate=0.0, total=10).eta is None


def test_critical_beyond_the_pool_is_shown(make_supervisor, capsys):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    tasks = [sup.submit(gate.wait, (WAIT,), priority=p) for p in (TASK_LOW, TASK_CRITICAL, TASK_CRITICAL)]
    try:
        with sup.live(plain_interval=3600) as view:
            snap = view.refresh()
            row = snap.task_types[0]
            assert (row.running, row.beyond) == (3, 2)
            assert "+2 CRITICAL" in capsys.readouterr().out
            gate.set()
    finally:
        gate.set()
        for task in tasks:
            task.result(WAIT)
    capsys.readouterr()
