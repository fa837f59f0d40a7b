"""atasker's pytest plugin: per-test supervisors, leak detection."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_plugin_is_loaded_through_its_entry_point(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("atasker")


def test_marker_configures_the_supervisor(pytester: pytest.Pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.atasker(pool_size=3, reserve_normal=1, reserve_high=0, autoload=False)
        def test_sizes(atasker_supervisor):
            assert atasker_supervisor.submit(pow, (2, 3)).result(5) == 8
            info = atasker_supervisor.get_info()["task_types"]["thread"]
            assert (info["pool_size"], info["reserve_normal"]) == (3, 1)

        def test_factory(atasker_supervisor_factory):
            a = atasker_supervisor_factory(autoload=False)
            b = atasker_supervisor_factory(autoload=False, start=False)
            assert a.is_active() and not b.is_active()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_leaked_tasks_fail_the_test(pytester: pytest.Pytester):
    pytester.makepyfile(
        """
        import threading

        gate = threading.Event()

        def test_leaks(atasker_supervisor):
            atasker_supervisor.submit(gate.wait, (30,), name="forgotten")
            threading.Timer(0.5, gate.set).start()  # so teardown can finish

        def test_clean(atasker_supervisor):
            atasker_supervisor.submit(int).result(5)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*the test leaked tasks*", "*'forgotten' (running)*"])
