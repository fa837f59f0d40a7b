"""Bad input: a clear exception naming the cause, and nothing else affected."""

from __future__ import annotations

import logging

import pytest

from atasker import (
    InvalidPriorityError,
    PluginConflictError,
    SupervisorStoppedError,
    TaskType,
    UnknownTaskTypeError,
    background_task,
    hookimpl,
)
from atasker.builtin.thread import ThreadExecutor
from tests.conftest import WAIT
from tests.test_plugins import write_fake_dist


def still_serving(sup) -> None:
    assert sup.submit(pow, (2, 5)).result(WAIT) == 32
    assert sup.get_info()["task_types"]["thread"]["running"] == 0


def test_unknown_task_type(supervisor):
    with pytest.raises(UnknownTaskTypeError, match="unknown task type 'gpu'.*known task types: .*'thread'"):
        supervisor.submit(int, tt="gpu")
    still_serving(supervisor)


@pytest.mark.parametrize("priority", ["high", 1.0, 2.5, -1, -100, None, True, object()])
def test_invalid_priority(supervisor, priority):
    with pytest.raises(InvalidPriorityError, match="invalid task priority"):
        supervisor.submit(int, priority=priority)
    with pytest.raises(InvalidPriorityError):
        background_task(int, priority=priority)
    still_serving(supervisor)


@pytest.mark.parametrize("func", [None, 3, "int", b"x", [int]])
def test_non_callable(supervisor, func):
    with pytest.raises(TypeError, match="callable"):
        supervisor.submit(func)
    still_serving(supervisor)


def test_bad_delay_and_callback(supervisor):
    with pytest.raises(ValueError, match="delay"):
        supervisor.submit(int, delay=-1)
    with pytest.raises(TypeError, match="callback"):
        supervisor.submit(int, callback=5)
    still_serving(supervisor)


def test_submit_after_stop(make_supervisor):
    sup = make_supervisor()
    sup.stop()
    with pytest.raises(SupervisorStoppedError, match="stopped"):
        sup.submit(int)


@pytest.mark.parametrize("field", ["pool_size", "reserve_normal", "reserve_high"])
def test_negative_pool_sizes(supervisor, field):
    with pytest.raises(ValueError, match=f"{field} must be an int >= 0, got -1"):
        supervisor.set_thread_pool(**{field: -1})
    still_serving(supervisor)


def test_plugin_hook_raises(make_supervisor):
    class Raising:
        __name__ = "raising"

        @hookimpl
        def atasker_register_task_types(self, register):
            raise ZeroDivisionError("bug in plugin")

    sup = make_supervisor(plugins=[Raising()])
    with pytest.raises(UnknownTaskTypeError, match="'raising'.*ZeroDivisionError: bug in plugin"):
        sup.submit(int, tt="raising-type")
    still_serving(sup)


def test_plugin_import_fails(make_supervisor, tmp_path, monkeypatch):
    write_fake_dist(tmp_path, "bad-dist", "0.1", "badplug", "bad_plug_mod", "raise RuntimeError('no config')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sup = make_supervisor(autoload=True)
    with pytest.raises(UnknownTaskTypeError, match="'badplug' .*bad-dist 0.1.*RuntimeError: no config"):
        sup.submit(int, tt="bad")
    still_serving(sup)


def test_two_plugins_claim_one_task_type(make_supervisor):
    def plugin(name):
        class P:
            __name__ = name

            @hookimpl
            def atasker_register_task_types(self, register):
                register(TaskType("shared", ThreadExecutor))

        return P()

    sup = make_supervisor(plugins=[plugin("one"), plugin("two")])
    with pytest.raises(PluginConflictError, match="task type 'shared' is provided by more than one plugin") as err:
        sup.submit(int, tt="shared")
    assert "'one'" in str(err.value) and "'two'" in str(err.value)
    still_serving(sup)


def test_callback_raises(supervisor, caplog):
    def callback(result):
        raise LookupError("callback failed")

    with caplog.at_level(logging.ERROR, logger="atasker"):
        task = supervisor.submit(pow, (2, 2), callback=callback)
        assert task.result(WAIT) == 4
    assert task.done() and task.outcome == "completed"
    still_serving(supervisor)
    assert "callback failed" in caplog.text
