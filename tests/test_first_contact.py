"""What a new user runs into first (issue #17): each test failed before its fix."""

from __future__ import annotations

import threading

import pytest

from atasker import (
    TASK_STATUS_CANCELED,
    TASK_STATUS_COMPLETED,
    UnknownTaskTypeError,
    background_task,
)

WAIT = 30


def test_an_ended_handle_says_how_it_ended(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    blocker = sup.submit(gate.wait, (WAIT,))
    queued = sup.submit(int)
    failing = sup.submit(lambda: 1 / 0)
    assert queued.cancel()
    gate.set()
    assert blocker.result(WAIT) is True
    with pytest.raises(ZeroDivisionError):
        failing.result(WAIT)
    assert (blocker.status, queued.status, failing.status) == (
        TASK_STATUS_COMPLETED,
        TASK_STATUS_CANCELED,
        TASK_STATUS_COMPLETED,
    )
    assert repr(blocker).endswith(" completed>") and repr(queued).endswith(" cancelled>")
    assert repr(failing).endswith(" failed>")


def test_set_pool_of_an_unknown_task_type_is_an_error(make_supervisor):
    sup = make_supervisor()
    with pytest.raises(UnknownTaskTypeError, match="unknown task type 'nope'"):
        sup.set_pool("nope", pool_size=1)


def test_scalar_args_are_refused_at_submit(make_supervisor):
    sup = make_supervisor()
    with pytest.raises(TypeError, match="args must be a tuple or a list, got int: -3"):
        sup.submit(abs, -3)  # type: ignore[arg-type]  # the mistake under test
    assert sup.submit(abs, [-3]).result(WAIT) == 3


def test_an_unknown_task_type_fails_at_decoration(make_supervisor):
    sup = make_supervisor()
    with pytest.raises(UnknownTaskTypeError, match="unknown task type 'nope'"):
        background_task(int, tt="nope", supervisor=sup)

    with pytest.raises(UnknownTaskTypeError):

        @background_task(tt="nope", supervisor=sup)
        def job() -> None:
            pass


def test_a_thread_task_timeout_fails_the_handle_and_the_thread_runs_on(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    release, returned = threading.Event(), threading.Event()

    def slow():
        release.wait(WAIT)
        returned.set()
        return "late"

    task = sup.submit(slow, timeout=0.2)
    with pytest.raises(TimeoutError, match="did not finish within its timeout of 0.2 s; its thread cannot be stopped"):
        task.result(WAIT)
    executor = sup.executor("thread")
    assert executor.statistics()["overrunning"] == 1
    # Its slot is free: the next task runs although the first function has not returned.
    assert sup.submit(int).result(WAIT) == 0
    release.set()
    assert returned.wait(WAIT)
    assert sup.stop(wait=WAIT)
    assert executor.statistics()["overrunning"] == 0 and isinstance(task.exception(), TimeoutError)


def test_a_thread_task_that_returns_in_time_is_not_timed_out(make_supervisor):
    sup = make_supervisor()
    assert [sup.submit(pow, (2, n), timeout=WAIT).result(WAIT) for n in range(50)] == [2**n for n in range(50)]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_child_runs_thread_and_coroutine_tasks_afresh(tmp_path):
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "forker.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys
            from atasker import TaskSupervisor

            async def aget(x):
                return x + 1

            sup = TaskSupervisor(autoload=False)
            assert sup.submit(pow, (2, 3)).result(10) == 8
            assert sup.submit(aget, (1,), tt="coroutine").result(10) == 2
            pid = os.fork()
            if pid == 0:
                try:
                    ok = sup.submit(pow, (2, 5)).result(10) == 32
                    ok = ok and sup.submit(aget, (41,), tt="coroutine").result(10) == 42
                    ok = ok and sup.stop(wait=10)
                finally:
                    os._exit(0 if ok else 3)
            _, status = os.waitpid(pid, 0)
            print("child", os.waitstatus_to_exitcode(status))
            assert sup.submit(pow, (2, 2)).result(10) == 4
            sup.stop()
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "child 0", out.stderr
