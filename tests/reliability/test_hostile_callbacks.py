"""Hostile callbacks and hooks: even ``SystemExit`` never kills a thread
that reports outcomes, nor loses a task (issue #19, item 2)."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

from atasker import hookimpl
from tests.conftest import WAIT


def serves(sup, n: int = 5) -> None:
    """The pool still runs tasks, its slots are free, and stop() finishes."""
    assert [sup.submit(pow, (2, i)).result(WAIT) for i in range(n)] == [2**i for i in range(n)]
    assert sup.get_info()["task_types"]["thread"]["running"] == 0


@pytest.mark.parametrize("raise_", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()], ids=repr)
def test_a_done_callback_that_raises_any_base_exception(make_supervisor, caplog, raise_):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    first = sup.submit(gate.wait, (WAIT,))
    held = sup.submit(pow, (3, 3))  # the pool thread takes it next, while reporting the first

    def hostile(_future):
        raise raise_

    first.add_done_callback(hostile)
    with caplog.at_level(logging.ERROR, logger="atasker"):
        gate.set()
        assert first.result(WAIT) is True
        assert held.result(WAIT) == 27
        serves(sup)
        assert sup.stop(wait=WAIT)
    assert f"done callback of task {first.id}" in caplog.text and type(raise_).__name__ in caplog.text


@pytest.mark.parametrize("hook", ["atasker_task_started", "atasker_task_finished", "atasker_task_waiting"])
@pytest.mark.parametrize("raise_", [SystemExit(3), KeyboardInterrupt()], ids=repr)
def test_an_observer_hook_that_raises_any_base_exception_on_a_pool_thread(make_supervisor, caplog, hook, raise_):
    class Hostile:
        pass

    def observer(task):
        if task.name == "victim":
            raise raise_

    setattr(Hostile, hook, staticmethod(hookimpl(observer)))
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0, plugins=[Hostile()])
    gate = threading.Event()
    # Submitted from a pool thread, so that every hook runs there, not on
    # this (main) thread, where Ctrl-C is still the user's.
    outer = sup.submit(lambda: [sup.submit(gate.wait, (WAIT,)), sup.submit(pow, (2, 10), name="victim")])
    _blocker, victim = outer.result(WAIT)
    with caplog.at_level(logging.ERROR, logger="atasker"):
        gate.set()
        assert victim.result(WAIT) == 1024
        serves(sup)
        assert sup.stop(wait=WAIT)  # the finished hook runs after the handle resolved
    assert f"hook {hook} raised {type(raise_).__name__}" in caplog.text


def test_a_callback_that_calls_sys_exit(make_supervisor, caplog):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    with caplog.at_level(logging.ERROR, logger="atasker"):
        task = sup.submit(pow, (2, 2), callback=lambda _r: sys.exit(4))
        assert task.result(WAIT) == 4
        serves(sup)
    assert "SystemExit" in caplog.text


class ExitsWhenUnpickled:
    """A result whose unpickling in the parent calls ``sys.exit(3)``."""

    def __reduce__(self):
        return (sys.exit, (3,))


def exit_bomb() -> ExitsWhenUnpickled:
    return ExitsWhenUnpickled()


def test_a_process_result_whose_unpickling_raises_system_exit_fails_only_its_task(make_supervisor):
    sup = make_supervisor()
    sup.set_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    bomb = sup.submit(exit_bomb, tt="mp")
    with pytest.raises(Exception, match="could not be unpickled in the parent process: SystemExit: 3"):
        bomb.result(WAIT)
    assert [sup.submit(pow, (2, n), tt="mp").result(WAIT) for n in range(3)] == [1, 2, 4]
    assert sup.stop(wait=WAIT)


def test_a_process_task_done_callback_that_calls_sys_exit(make_supervisor, caplog):
    sup = make_supervisor()
    sup.set_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    first = sup.submit(pow, (2, 3), tt="mp")
    first.add_done_callback(lambda _f: sys.exit(5))
    with caplog.at_level(logging.ERROR, logger="atasker"):
        assert first.result(WAIT) == 8
        assert [sup.submit(pow, (3, n), tt="mp").result(WAIT) for n in range(3)] == [1, 3, 9]
    assert sup.stop(wait=WAIT)
