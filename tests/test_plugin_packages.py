"""The plugin packages under plugins/, installed for real by ``make venv``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import wait
from importlib.metadata import entry_points

import pytest

from atasker import TASK_HIGH, TASK_LOW, PluginConflictError
from tests.conftest import WAIT
from tests.test_plugins import write_fake_dist

for _package in ("atasker_subprocess", "atasker_fairshare"):
    pytest.importorskip(_package, reason="needs plugins/atasker-subprocess and plugins/atasker-fairshare installed")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX commands")


def test_packages_are_installed_with_entry_points():
    eps = {ep.name: ep for ep in entry_points(group="atasker")}
    assert eps["subprocess"].dist.name == "atasker-subprocess"
    assert eps["fairshare"].dist.name == "atasker-fairshare"


# ------------------------------------------------------------ subprocess


@pytest.fixture
def sup(make_supervisor):
    """Autoload on: the subprocess task type comes through its entry point."""
    return make_supervisor(autoload=True)


def fifo_gate(tmp_path, name="gate"):
    """A FIFO: the child blocks writing to it until the test reads."""
    path = tmp_path / name
    os.mkfifo(path)
    return path


def test_command_line_string_and_list(sup):
    assert sup.plugin_manager.records["subprocess"].distribution == "atasker-subprocess"
    done = sup.submit(lambda who: f"echo hello {who}", ("world",), tt="subprocess").result(WAIT)
    assert isinstance(done, subprocess.CompletedProcess)
    assert (done.returncode, done.stdout, done.args) == (0, "hello world\n", ["echo", "hello", "world"])
    listed = sup.submit(lambda: [sys.executable, "-c", "import sys; sys.stderr.write('e')"], tt="subprocess")
    assert listed.result(WAIT).stderr == "e"


def test_command_object_with_input_and_cwd(sup, tmp_path):
    from atasker_subprocess import Command

    task = sup.submit(lambda: Command(["cat"], cwd=str(tmp_path), input="piped"), tt="subprocess")
    assert task.result(WAIT).stdout == "piped"


def test_nonzero_exit_is_a_clear_error(sup):
    task = sup.submit(lambda: ["sh", "-c", "echo out; echo err >&2; exit 3"], tt="subprocess")
    with pytest.raises(subprocess.CalledProcessError) as err:
        task.result(WAIT)
    assert (err.value.returncode, err.value.stdout, err.value.stderr) == (3, "out\n", "err\n")


def test_bad_return_value_and_missing_program(sup):
    with pytest.raises(TypeError, match="must return a command line"):
        sup.submit(lambda: 42, tt="subprocess").result(WAIT)
    with pytest.raises(FileNotFoundError):
        sup.submit(lambda: ["no-such-program-xyz"], tt="subprocess").result(WAIT)


def test_timeout_kills_the_child(sup):
    from atasker_subprocess import CommandTimeoutError

    task = sup.submit(lambda: ["sleep", "30"], tt="subprocess", timeout=0.2)
    with pytest.raises(CommandTimeoutError, match="timed out after 0.2 s"):
        task.result(WAIT)
    assert isinstance(task.exception(), TimeoutError)


def test_cancel_running_kills_the_child(sup, tmp_path):
    gate = fifo_gate(tmp_path)
    task = sup.submit(lambda: ["sh", "-c", f"echo up > {gate}; exec sleep 30"], tt="subprocess")
    with open(gate) as fifo:  # returns once the child is running
        assert fifo.read() == "up\n"
    assert task.cancel()
    wait([task], WAIT)
    assert task.cancelled()


def test_priorities_and_reserves_apply(sup, tmp_path):
    sup.set_pool("subprocess", pool_size=1, reserve_normal=0, reserve_high=0)
    gate = fifo_gate(tmp_path)
    blocker = sup.submit(lambda: ["sh", "-c", f"echo up > {gate}"], tt="subprocess")
    low = sup.submit(lambda: "echo low", tt="subprocess", priority=TASK_LOW)
    high = sup.submit(lambda: "echo high", tt="subprocess", priority=TASK_HIGH)
    assert (low.status, high.status) == (0, 0)
    with open(gate) as fifo:
        fifo.read()
    assert [t.result(WAIT).stdout for t in (blocker, low, high)] == ["", "low\n", "high\n"]
    assert high.time_started <= low.time_started


def test_subprocess_plugin_listed_by_cli():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATASKER_")}
    out = subprocess.run(
        [sys.executable, "-m", "atasker", "plugins"], capture_output=True, text=True, env=env, timeout=60
    ).stdout
    assert "atasker-subprocess" in out and "subprocess: subprocess" in out and "fairshare: fairshare" in out


# ------------------------------------------------------------- fairshare


def run_order(sup, submissions):
    """Block the single slot, queue *submissions*, release, return start order."""
    gate = threading.Event()
    order = []
    blocker = sup.submit(gate.wait, (WAIT,), priority=0)
    tasks = [sup.submit(order.append, (name,), name=name.split("-")[0], priority=p) for name, p in submissions]
    gate.set()
    for t in [blocker, *tasks]:
        t.result(WAIT)
    return order


NOISY = [(f"noisy-{i}", 100) for i in range(5)] + [("quiet-1", 100), ("quiet-2", 100), ("urgent-1", 50)]
SIZES = dict(pool_size=1, reserve_normal=0, reserve_high=0)


def test_fairshare_installed_but_not_selected_keeps_default(make_supervisor):
    sup = make_supervisor(autoload=True, **SIZES)
    assert run_order(sup, NOISY) == ["urgent-1", *[f"noisy-{i}" for i in range(5)], "quiet-1", "quiet-2"]


def test_fairshare_selected_through_api(make_supervisor):
    sup = make_supervisor(autoload=True, queue_policy="fairshare", **SIZES)
    assert run_order(sup, NOISY) == [
        "urgent-1", "noisy-0", "quiet-1", "noisy-1", "quiet-2", "noisy-2", "noisy-3", "noisy-4"
    ]  # fmt: skip


def test_fairshare_selected_through_environment(make_supervisor, monkeypatch):
    monkeypatch.setenv("ATASKER_QUEUE_POLICY", "fairshare")
    sup = make_supervisor(autoload=True, **SIZES)
    assert run_order(sup, NOISY)[:3] == ["urgent-1", "noisy-0", "quiet-1"]


def test_fairshare_keeps_reserves_and_critical(make_supervisor):
    sup = make_supervisor(autoload=True, queue_policy="fairshare", pool_size=1, reserve_normal=1, reserve_high=0)
    gate = threading.Event()
    try:
        low = [sup.submit(gate.wait, (WAIT,), priority=TASK_LOW, name=f"l{i}") for i in range(2)]
        normal = sup.submit(gate.wait, (WAIT,), name="n")
        high = sup.submit(gate.wait, (WAIT,), priority=TASK_HIGH, name="h")
        critical = sup.submit(gate.wait, (WAIT,), priority=0, name="c")
        assert [t.status for t in [*low, normal, high, critical]] == [1, 0, 1, 0, 1]
    finally:
        gate.set()
    for t in [*low, normal, high, critical]:
        t.result(WAIT)


# ---------------------------------------------------------- swap a built-in

FAST_MP = """
import threading
from atasker import TaskType, hookimpl
from atasker.builtin.thread import ThreadExecutor

class NotReallyProcesses(ThreadExecutor):
    pass

@hookimpl
def atasker_register_task_types(register):
    register(TaskType("mp", NotReallyProcesses, pool_size=2, doc="mp on threads"))
"""


def test_replacing_builtin_mp_needs_an_explicit_step(make_supervisor, tmp_path, monkeypatch):
    write_fake_dist(tmp_path, "fast-mp", "1.0", "fastmp", "fast_mp_plugin", FAST_MP)
    monkeypatch.syspath_prepend(str(tmp_path))
    clash = make_supervisor(autoload=True)
    with pytest.raises(PluginConflictError) as err:
        clash.submit(threading.get_ident, tt="mp")
    message = str(err.value)
    assert "'atasker.builtin.mp'" in message and "'fastmp' (distribution fast-mp 1.0)" in message
    assert clash.submit(int).result(WAIT) == 0  # thread tasks unaffected

    monkeypatch.setenv("ATASKER_PROVIDERS", "mp=fastmp")
    chosen = make_supervisor(autoload=True)
    task = chosen.submit(threading.get_ident, tt="mp")
    assert task.result(WAIT) != threading.get_ident()
    assert type(chosen.executor("mp")).__name__ == "NotReallyProcesses"

    monkeypatch.delenv("ATASKER_PROVIDERS")
    blocked = make_supervisor(autoload=True, block_plugins=["atasker.builtin.mp"])
    assert type(blocked.executor("mp")).__name__ == "NotReallyProcesses"
