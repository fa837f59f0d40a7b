"""FunctionCollection, TaskCollection, Locker, LocalProxy / g."""

from __future__ import annotations

import threading

import pytest

from atasker import (
    TASK_HIGH,
    TASK_LOW,
    FunctionCollection,
    LocalProxy,
    Locker,
    LockerTimeoutError,
    TaskCollection,
    g,
)
from tests.conftest import WAIT


def test_function_collection_runs_in_priority_order():
    order = []
    errors = []
    startup = FunctionCollection(on_error=lambda e, **kw: errors.append((e, kw)), on_error_kwargs={"k": 1})

    @startup
    def f1():
        order.append("f1")
        return 1

    @startup(priority=TASK_HIGH)
    def f2():
        order.append("f2")
        return 2

    @startup(priority=TASK_LOW)
    def f3():
        order.append("f3")
        raise RuntimeError("f3 failed")

    result, all_ok = startup.execute()
    assert order == ["f2", "f1", "f3"]
    assert not all_ok
    assert result == {f"{__name__}.{f.__qualname__}": v for f, v in ((f2, 2), (f1, 1), (f3, None))}
    assert isinstance(errors[0][0], RuntimeError) and errors[0][1] == {"k": 1}
    startup.remove(f3)
    assert startup.execute()[1] is True
    assert list(startup.run().values()) == [2, 1]


def test_include_exceptions():
    col = FunctionCollection(include_exceptions=True)
    col.append(lambda: 1 / 0)
    (value,) = col.run().values()
    assert isinstance(value, ZeroDivisionError)
    with pytest.raises(TypeError):
        col.append("not callable")


def test_task_collection_runs_tasks_with_priorities(make_supervisor):
    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = threading.Event()
    blocker = sup.submit(gate.wait, (WAIT,))
    threads = []
    order = []
    col = TaskCollection(supervisor=sup)

    @col(priority=TASK_LOW)
    def low():
        order.append("low")
        threads.append(threading.current_thread().name)
        return "l"

    @col(priority=TASK_HIGH)
    def high():
        order.append("high")
        return "h"

    threading.Timer(0.05, gate.set).start()
    result, ok = col.execute()
    blocker.result(WAIT)
    assert ok and list(result.values()) == ["h", "l"]
    assert order == ["high", "low"]
    assert threads[0].startswith("atasker_thread")


def test_locker_as_decorator_and_context_manager():
    lock = Locker(mod="test", timeout=0.05)
    called = []
    lock.critical = lambda: called.append(True)

    @lock
    def protected(x):
        return x + 1

    assert protected(1) == 2
    with lock:
        assert protected(2) == 3  # re-entrant by default
        errors = []

        def contend():
            try:
                with lock:
                    pass
            except LockerTimeoutError as exc:
                errors.append(exc)

        t = threading.Thread(target=contend)
        t.start()
        t.join(WAIT)
    assert len(errors) == 1 and "test" in str(errors[0])
    assert called[-1] is True


def test_local_proxy_is_per_thread():
    assert isinstance(g, LocalProxy)
    g.set("db", "main-conn")
    seen = {}

    def other():
        seen["has"] = g.has("db")
        g.set("db", "other-conn")
        seen["value"] = g.get("db")

    t = threading.Thread(target=other)
    t.start()
    t.join(WAIT)
    assert seen == {"has": False, "value": "other-conn"}
    assert g.get("db") == "main-conn"
    g.clear("db")
    assert not g.has("db") and g.get("db", "default") == "default"
    g.clear("db")  # no error
