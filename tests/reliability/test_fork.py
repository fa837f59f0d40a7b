"""A forked child (``os.fork``, multiprocessing ``fork``) runs thread,
delayed and coroutine tasks, and its watchdog warns (issue #19, item 9)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import WAIT

FORK_SCRIPT = """
import multiprocessing, os, sys, threading
from atasker import TaskSupervisor, task_supervisor

warned = []
gates = [threading.Event()]

def warn(task):
    warned.append(task.id)
    gates[-1].set()  # the starved task's warning lets its blocker end

sup = TaskSupervisor(
    autoload=False, pool_size=1, reserve_normal=0, reserve_high=0, timeout_warning=0.1, timeout_warning_func=warn
)

async def aget(x):
    return x + 1

def child():
    warned.clear()
    ok = sup.submit(pow, (2, 5)).result(10) == 32
    ok = ok and sup.submit(pow, (2, 6), delay=0.05).result(10) == 64
    ok = ok and sup.submit(aget, (41,), tt="coroutine", delay=0.05).result(10) == 42
    gates.append(threading.Event())
    blocker, starved = sup.submit(gates[-1].wait, (10,)), sup.submit(int)
    ok = ok and starved.result(10) == 0 and blocker.result(10) is True
    ok = ok and warned == [starved.id]
    ok = ok and sup.stop(wait=10)
    ok = ok and task_supervisor.submit(pow, (3, 2), delay=0.05).result(10) == 9
    return ok

# The parent has a delayed task and a watchdog check pending at the fork.
hold = threading.Event()
blocker, starved = sup.submit(hold.wait, (10,)), sup.submit(int)
pending = sup.submit(pow, (2, 9), delay=1)
assert task_supervisor.submit(int, delay=0.01).result(10) == 0

if sys.argv[1] == "os.fork":
    pid = os.fork()
    if pid == 0:
        try:
            code = 0 if child() else 3
        except BaseException as exc:
            print("child:", repr(exc), file=sys.stderr)
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
else:
    def target(queue):
        try:
            queue.put(child())
        except BaseException as exc:
            queue.put(repr(exc))

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(queue,))
    proc.start()
    result = queue.get(timeout=30)
    proc.join(30)
    code = 0 if result is True else result
hold.set()
assert pending.result(10) == 512 and starved.result(10) == 0
sup.stop()
print("child", code)
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
@pytest.mark.parametrize("how", ["os.fork", "multiprocessing"])
def test_a_forked_child_runs_thread_delayed_and_coroutine_tasks_and_its_watchdog_warns(tmp_path, how):
    script = tmp_path / "forker.py"
    script.write_text(textwrap.dedent(FORK_SCRIPT))
    out = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", str(script), how],
        capture_output=True,
        text=True,
        timeout=WAIT * 6,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["child", "0"], out.stderr[-3000:]
