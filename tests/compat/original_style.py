#!/usr/bin/env python3
"""A test module written the way the original atasker's users wrote theirs.

unittest, the default ``task_supervisor`` sized at module level, started in
``__main__``, ``poll_delay`` set; only names the original documented.  Run
as a program by ``test_original_style.py`` (``python original_style.py``).
"""

import asyncio
import sys
import threading
import unittest
from types import SimpleNamespace

from atasker import (
    TASK_HIGH,
    TT_MP,
    FunctionCollection,
    Locker,
    TaskCollection,
    background_task,
    background_worker,
    g,
    set_debug,
    task_supervisor,
)
from tests.mp import test_mp

TIMEOUT = 10

result = SimpleNamespace(locker_success=False, locker_failed=False, collection=0)


class Test(unittest.TestCase):
    def test_background_task_annotated(self):
        done = threading.Event()

        @background_task
        def t(a, x):
            result.annotated = a + x
            done.set()

        t(1, x=2)
        self.assertTrue(done.wait(TIMEOUT))
        self.assertEqual(result.annotated, 3)

    def test_background_task_manual_with_priority(self):
        done = threading.Event()

        def t(a, x):
            result.manual = a * x
            done.set()

        background_task(t, name="manual", priority=TASK_HIGH)(2, x=3)
        self.assertTrue(done.wait(TIMEOUT))
        self.assertEqual(result.manual, 6)

    def test_background_task_mp_callback(self):
        done = threading.Event()

        def callback(res):
            result.mp = res
            done.set()

        background_task(test_mp, tt=TT_MP, callback=callback)(3, x=7)
        self.assertTrue(done.wait(TIMEOUT))
        self.assertEqual(result.mp, 10)

    def test_own_thread_with_put_task(self):
        done = threading.Event()

        def mytask():
            done.set()
            task_supervisor.mark_task_completed()

        task_supervisor.put_task(threading.Thread(target=mytask))
        self.assertTrue(done.wait(TIMEOUT))

    def test_g(self):
        seen = threading.Event()

        @background_task
        def f():
            result.g = g.get("test", 222)
            seen.set()

        g.set("test", 1)
        f()
        self.assertTrue(seen.wait(TIMEOUT))
        self.assertEqual(result.g, 222)
        self.assertEqual(g.get("test"), 1)
        g.clear("test")
        self.assertFalse(g.has("test"))

    def test_collections(self):
        f = FunctionCollection()
        t = TaskCollection()

        @f
        def f1():
            result.collection += 1

        @t
        def t1():
            result.collection += 2

        f.run()
        t.run()
        self.assertEqual(result.collection, 3)

    def test_interval_worker(self):
        enough = threading.Event()
        result.ticks = 0

        @background_worker(interval=0.02)
        def w(**kwargs):
            result.ticks += 1
            if result.ticks >= 3:
                enough.set()

        w.start()
        self.assertTrue(enough.wait(TIMEOUT))
        w.stop()

    def test_queue_and_event_workers(self):
        got, triggered = [], threading.Event()

        @background_worker(q=True)
        def qw(item, **kwargs):
            got.append(item)

        @background_worker(e=True)
        def ew(**kwargs):
            triggered.set()

        qw.start()
        ew.start()
        qw.put(2)
        qw.put(3)
        ew.trigger()
        self.assertTrue(triggered.wait(TIMEOUT))
        qw.stop()
        ew.stop()
        self.assertEqual(got, [2, 3])

    def test_locker(self):
        with_lock = Locker(mod="test (broken is fine!)", relative=False, timeout=0.5)

        @with_lock
        def test_locker():
            result.locker_failed = True

        def locker_ok():
            result.locker_success = True

        with_lock.critical = locker_ok
        with_lock.lock.acquire()
        test_locker()
        with_lock.lock.release()
        self.assertTrue(result.locker_success)
        self.assertFalse(result.locker_failed)

    def test_supervisor_info(self):
        info = task_supervisor.get_info()
        self.assertEqual(info.mp_tasks_count, 0)
        self.assertGreaterEqual(info.thread_tasks_count, 0)
        self.assertEqual(info.thread_pool_size, 20)

    def test_aloop(self):
        a = task_supervisor.create_aloop("test2")

        async def t2(x):
            await asyncio.sleep(0)
            return x * 2

        self.assertEqual(a.run(t2(2)), 4)
        self.assertIn("test2", task_supervisor.get_info().aloops)


task_supervisor.set_thread_pool(pool_size=20, reserve_normal=5, reserve_high=5)
task_supervisor.set_mp_pool(pool_size=2, reserve_normal=1, reserve_high=1)

if __name__ == "__main__":
    if sys.argv[1:] == ["debug"]:
        set_debug()
    task_supervisor.start()
    task_supervisor.poll_delay = 0.01
    test_suite = unittest.TestLoader().loadTestsFromTestCase(Test)
    test_result = unittest.TextTestRunner().run(test_suite)
    task_supervisor.stop(wait=2)
    sys.exit(not test_result.wasSuccessful())
