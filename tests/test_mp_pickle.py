"""Process tasks and pickling: lambdas, closures, ``__main__`` functions and
classes (cloudpickle, by value), plain functions and data (stdlib pickle)."""

from __future__ import annotations

import functools
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import tests.mp
from atasker import TT_MP
from atasker.builtin.mp.worker import accepts_task_id, describe, dumps
from tests.conftest import WAIT
from tests.test_mp_faults import START_METHODS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=START_METHODS)
def sup(request, make_supervisor):
    """A one-worker pool per start method (spawn catches pickling bugs)."""
    sup = make_supervisor()
    sup.create_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0, start_method=request.param)
    return sup


def test_lambdas_closures_and_partials(sup):
    offset = 10

    def closure(x):
        return x + offset

    assert sup.submit(lambda x: x * 3, (5,), tt=TT_MP).result(WAIT) == 15
    assert sup.submit(closure, (1,), tt=TT_MP).result(WAIT) == 11
    assert sup.submit(functools.partial(lambda a, b: a - b, 10), (3,), tt=TT_MP).result(WAIT) == 7
    # a lambda as an argument, and a closure as a result
    assert sup.submit(tests.mp.call, (lambda: "called",), tt=TT_MP).result(WAIT) == "called"
    triple = sup.submit(tests.mp.make_multiplier, (3,), tt=TT_MP).result(WAIT)
    assert triple(4) == 12


def test_closure_gets_task_id_through_kwargs(sup):
    def f(**kwargs):
        return kwargs

    task = sup.submit(f, (), {"a": 1}, tt=TT_MP)
    assert task.result(WAIT) == {"a": 1, "_task_id": task.id}


MAIN_SCRIPT = """
import os
import sys

from atasker import TT_MP, TaskSupervisor


def square(x):
    return x * x


class Point:
    def __init__(self, x):
        self.x = x


def make_adder(n):
    def add(x):
        return x + n
    return add


def main(method):
    sup = TaskSupervisor(autoload=False)
    sup.start()
    sup.create_mp_pool(start_method=method, pool_size=1, reserve_normal=0, reserve_high=0)

    def defined_late(x):  # never visible to a worker that imports this module
        return -x

    point = sup.submit(Point, (5,), tt=TT_MP).result(10)
    results = [
        sup.submit(square, (7,), tt=TT_MP).result(10),
        sup.submit(make_adder(3), (4,), tt=TT_MP).result(10),
        sup.submit(lambda x: x * 10, (5,), tt=TT_MP).result(10),
        sup.submit(defined_late, (2,), tt=TT_MP).result(10),
        sup.submit(getattr, (Point(8), "x"), tt=TT_MP).result(10),
        type(point) is Point and point.x == 5,
        sup.submit(os.getpid, tt=TT_MP).result(10) != os.getpid(),
    ]
    sup.stop()
    print(results)


if __name__ == "__main__":
    main(sys.argv[1])
"""

EXPECTED = "[49, 7, 50, -2, 8, True, True]"


@pytest.mark.parametrize("start_method", ["forkserver", "spawn", "fork"])
def test_main_module_functions_classes_and_lambdas_in_a_script(tmp_path, start_method):
    script = tmp_path / "main_script.py"
    script.write_text(MAIN_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), start_method], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == EXPECTED


def test_main_module_functions_without_a_main_file(tmp_path):
    # python -c: the workers cannot import __main__ at all; by value it works.
    code = MAIN_SCRIPT.replace("main(sys.argv[1])", 'main("spawn")')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == EXPECTED


def test_plain_tasks_use_the_standard_pickler():
    payload = (1, tests.mp.square, (2, "x", [3.0]), {"k": None})
    assert dumps(payload) == pickle.dumps(payload, pickle.HIGHEST_PROTOCOL)  # no cloudpickle involved
    lam = pickle.loads(dumps(lambda x: x + 1))
    assert lam(1) == 2


def test_describe_and_accepts_task_id():
    assert describe(tests.mp.square) == "function tests.mp.square"
    assert describe([1]) == "a list object"
    assert describe(tests.mp.CustomError(1, "x")) == "a tests.mp.CustomError object"
    assert accepts_task_id(tests.mp.echo_task_id) and accepts_task_id(tests.mp.test)
    assert not accepts_task_id(tests.mp.square) and not accepts_task_id(len)
    assert accepts_task_id(functools.partial(tests.mp.kwargs_of, a=1))
