"""Plugin loading: built-ins, in-memory plugins, entry points, errors."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from importlib.metadata import entry_points
from pathlib import Path

import pluggy
import pytest

from atasker import (
    PluginConflictError,
    QueuePolicyType,
    TaskSupervisor,
    TaskType,
    UnknownTaskTypeError,
    hookimpl,
)
from atasker.builtin.policy import PriorityPolicy
from atasker.builtin.thread import ThreadExecutor
from atasker.tools.cli import describe_plugins
from atasker.tools.cli import main as cli_main
from tests.conftest import WAIT


class NamedPlugin:
    """An in-memory plugin object with a name (so it can be blocked/picked)."""

    def __init__(self, name: str, *task_types: str) -> None:
        self.__name__ = name
        self.task_types = task_types

    @hookimpl
    def atasker_register_task_types(self, register):
        for tt in self.task_types:
            register(TaskType(tt, ThreadExecutor, pool_size=2, doc=f"{tt} from {self.__name__}"))


class Recorder:
    """Observer plugin: records lifecycle events."""

    __name__ = "recorder"

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.lock = threading.Lock()

    def _add(self, event, obj):
        with self.lock:
            self.events.append((event, obj))

    @hookimpl
    def atasker_supervisor_started(self, supervisor):
        self._add("supervisor_started", supervisor)

    @hookimpl
    def atasker_supervisor_stopped(self, supervisor):
        self._add("supervisor_stopped", supervisor)

    @hookimpl
    def atasker_task_queued(self, task):
        self._add("queued", task)

    @hookimpl
    def atasker_task_started(self, task):
        self._add("started", task)

    @hookimpl
    def atasker_task_finished(self, task):
        self._add("finished", task)


def test_builtins_are_plugins_and_listed(make_supervisor):
    sup = make_supervisor()
    names = [name for name, _ in sup.plugin_manager.list_name_plugin()]
    for builtin in ("atasker.builtin.thread", "atasker.builtin.policy", "atasker.builtin.memory_store"):
        assert builtin in names
    info = describe_plugins(sup)
    assert info["task_types"]["thread"] == ["atasker.builtin.thread"]
    assert info["queue_policies"]["priority"] == ["atasker.builtin.policy"]
    assert info["status_stores"]["memory"] == ["atasker.builtin.memory_store"]


def test_lifecycle_hooks_in_order(make_supervisor):
    rec = Recorder()
    sup = make_supervisor(plugins=[rec])
    task = sup.submit(pow, (2, 3))
    assert task.result(WAIT) == 8
    sup.stop()
    events = [(e, o) for e, o in rec.events]
    assert events[0] == ("supervisor_started", sup)
    assert [e for e, o in events if o is task] == ["queued", "started", "finished"]
    assert events[-1] == ("supervisor_stopped", sup)


def test_observer_registered_while_running_takes_effect(supervisor):
    assert supervisor.submit(int).result(WAIT) == 0
    rec = Recorder()
    supervisor.register_plugin(rec)
    task = supervisor.submit(int)
    task.result(WAIT)
    supervisor.stop()
    assert ("queued", task) in rec.events
    supervisor.start()
    supervisor.unregister_plugin(rec)
    other = supervisor.submit(int)
    other.result(WAIT)
    assert ("queued", other) not in rec.events


def test_observer_that_raises_reports_internalerror_and_task_completes(make_supervisor, caplog):
    seen = []

    class Broken:
        __name__ = "broken-observer"

        @hookimpl
        def atasker_task_started(self, task):
            raise RuntimeError("observer bug")

        @hookimpl
        def atasker_internalerror(self, exc, where):
            seen.append((type(exc), where))

    sup = make_supervisor(plugins=[Broken()])
    assert sup.submit(pow, (3, 3)).result(WAIT) == 27
    assert (RuntimeError, "hook atasker_task_started") in seen
    assert "observer bug" in caplog.text


def test_in_memory_task_type(make_supervisor):
    sup = make_supervisor(plugins=[NamedPlugin("extra", "extra-threads")])
    task = sup.submit(pow, (2, 5), tt="extra-threads")
    assert task.result(WAIT) == 32 and task.tt == "extra-threads"
    assert "extra-threads" in sup.task_types()


def test_duplicate_task_type_is_an_error_naming_both(make_supervisor):
    sup = make_supervisor(plugins=[NamedPlugin("first-plugin", "dup"), NamedPlugin("second-plugin", "dup")])
    with pytest.raises(
        PluginConflictError, match="'dup'.*'second-plugin'.*'first-plugin'|'dup'.*'first-plugin'.*'second-plugin'"
    ):
        sup.submit(int, tt="dup")
    assert sup.submit(int).result(WAIT) == 0  # other task types still work


def test_duplicate_resolved_by_explicit_provider(make_supervisor, monkeypatch):
    plugins = [NamedPlugin("first-plugin", "dup"), NamedPlugin("second-plugin", "dup")]
    sup = make_supervisor(plugins=plugins, providers={"dup": "second-plugin"})
    assert sup.submit(int, tt="dup").result(WAIT) == 0
    monkeypatch.setenv("ATASKER_PROVIDERS", "dup=first-plugin")
    sup2 = make_supervisor(plugins=plugins)
    assert sup2.submit(int, tt="dup").result(WAIT) == 0


def test_duplicate_resolved_by_blocking_one(make_supervisor):
    sup = make_supervisor(
        plugins=[NamedPlugin("first-plugin", "dup"), NamedPlugin("second-plugin", "dup")],
        block_plugins=["first-plugin"],
    )
    assert sup.submit(int, tt="dup").result(WAIT) == 0
    assert sup.registry("task type").providers_of("dup") == ["second-plugin"]


def test_replacing_a_builtin_needs_an_explicit_step(make_supervisor):
    replacement = NamedPlugin("my-threads", "thread")
    sup = make_supervisor(plugins=[replacement])
    with pytest.raises(PluginConflictError, match="atasker.builtin.thread") as err:
        sup.submit(int)
    assert "my-threads" in str(err.value) and "ATASKER_PROVIDERS" in str(err.value)
    chosen = make_supervisor(plugins=[replacement], providers={"thread": "my-threads"})
    assert chosen.submit(int).result(WAIT) == 0
    blocked = make_supervisor(plugins=[replacement], block_plugins=["atasker.builtin.thread"])
    assert blocked.submit(int).result(WAIT) == 0


def test_blocking_a_builtin_by_name(make_supervisor, monkeypatch):
    monkeypatch.setenv("ATASKER_BLOCK_PLUGINS", "atasker.builtin.thread")
    sup = make_supervisor()
    assert sup.plugin_manager.is_blocked("atasker.builtin.thread")
    with pytest.raises(UnknownTaskTypeError, match="unknown task type 'thread'"):
        sup.submit(int)


def test_two_supervisors_with_different_plugins(make_supervisor):
    a = make_supervisor(plugins=[NamedPlugin("only-a", "a-type")])
    b = make_supervisor()
    assert a.submit(int, tt="a-type").result(WAIT) == 0
    with pytest.raises(UnknownTaskTypeError):
        b.submit(int, tt="a-type")


def test_plugin_hook_that_raises_is_reported_by_name(make_supervisor):
    class Exploding:
        __name__ = "exploding"

        @hookimpl
        def atasker_register_task_types(self, register):
            raise RuntimeError("cannot register")

    sup = make_supervisor(plugins=[Exploding()])
    assert sup.submit(int).result(WAIT) == 0
    with pytest.raises(UnknownTaskTypeError, match="exploding.*RuntimeError: cannot register"):
        sup.submit(int, tt="whatever")


def test_custom_queue_policy_selected_by_name(make_supervisor, monkeypatch):
    class Fifo(PriorityPolicy):
        def push(self, task):  # ignore priorities: one key for all
            import heapq

            heapq.heappush(self._heap, (0, next(self._seq), task))
            self._counts[task.priority] += 1
            self._live += 1

    class FifoPlugin:
        __name__ = "fifo-plugin"

        @hookimpl
        def atasker_register_queue_policies(self, register):
            register(QueuePolicyType("fifo", Fifo))

    def run(sup):
        gate = threading.Event()
        order = []
        blocker = sup.submit(gate.wait, (WAIT,))
        tasks = [sup.submit(order.append, (p,), priority=p) for p in (200, 50, 100)]
        gate.set()
        for t in [blocker, *tasks]:
            t.result(WAIT)
        return order

    sizes = dict(pool_size=1, reserve_normal=0, reserve_high=0)
    assert run(make_supervisor(plugins=[FifoPlugin()], **sizes)) == [50, 100, 200]  # installed, not chosen
    assert run(make_supervisor(plugins=[FifoPlugin()], queue_policy="fifo", **sizes)) == [200, 50, 100]
    monkeypatch.setenv("ATASKER_QUEUE_POLICY", "fifo")
    assert run(make_supervisor(plugins=[FifoPlugin()], **sizes)) == [200, 50, 100]


def test_unknown_queue_policy_fails_start_clearly(make_supervisor):
    sup = make_supervisor(start=False, queue_policy="nope")
    with pytest.raises(LookupError, match="unknown queue policy 'nope'; known queue policies: 'priority'"):
        sup.start()
    assert not sup.is_active()
    sup.start(queue_policy="priority")
    assert sup.submit(int).result(WAIT) == 0


def test_debug_plugins_traces_to_logger(make_supervisor, monkeypatch, caplog):
    monkeypatch.setenv("ATASKER_DEBUG_PLUGINS", "1")
    with caplog.at_level(logging.DEBUG, logger="atasker"):
        sup = make_supervisor()
        sup.submit(int).result(WAIT)
    assert "registered task type 'thread'" in caplog.text


# ----------------------------------------------------------- entry points


def write_fake_dist(root: Path, dist: str, version: str, ep_name: str, module: str, code: str) -> None:
    """A module plus a ``*.dist-info`` whose entry point names it."""
    (root / f"{module}.py").write_text(code)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[atasker]\n{ep_name} = {module}\n")


FAKE_PLUGIN = """
from atasker import TaskType, hookimpl
from atasker.builtin.thread import ThreadExecutor

@hookimpl
def atasker_register_task_types(register):
    register(TaskType("fake", ThreadExecutor, pool_size=1))
"""


def test_fake_dist_info_entry_point_is_loaded(make_supervisor, tmp_path, monkeypatch):
    write_fake_dist(tmp_path, "fake-dist", "0.9", "fakeplug", "fake_plugin_mod", FAKE_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    sup = make_supervisor(autoload=True)
    assert sup.submit(pow, (2, 2), tt="fake").result(WAIT) == 4
    record = sup.plugin_manager.records["fakeplug"]
    assert (record.distribution, record.version) == ("fake-dist", "0.9")
    blocked = make_supervisor(autoload=True, block_plugins=["fakeplug"])
    with pytest.raises(UnknownTaskTypeError):
        blocked.submit(int, tt="fake")


def test_broken_plugin_import_does_not_break_unrelated_work(make_supervisor, tmp_path, monkeypatch, caplog):
    write_fake_dist(tmp_path, "broken-dist", "2.0", "brokenplug", "broken_plugin_mod", "import does_not_exist_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sup = make_supervisor(autoload=True)
    assert sup.submit(int).result(WAIT) == 0
    with pytest.raises(UnknownTaskTypeError) as err:
        sup.submit(int, tt="brokentype")
    message = str(err.value)
    assert "brokenplug" in message and "broken-dist 2.0" in message and "does_not_exist_xyz" in message
    assert isinstance(sup.plugin_manager.broken["brokenplug"].error.__cause__, ModuleNotFoundError)
    assert "brokenplug" in caplog.text
    listed = {p["name"]: p for p in describe_plugins(sup)["plugins"]}
    assert "does_not_exist_xyz" in listed["brokenplug"]["error"]


def test_autoload_disabled_by_environment(make_supervisor, tmp_path, monkeypatch):
    write_fake_dist(tmp_path, "fake-dist", "0.9", "fakeplug", "fake_plugin_mod2", FAKE_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ATASKER_DISABLE_PLUGIN_AUTOLOAD", "1")
    sup = make_supervisor()
    assert not sup.plugin_manager.has_plugin("fakeplug")
    monkeypatch.setenv("ATASKER_PLUGINS", "fake_plugin_mod2")
    explicit = make_supervisor()
    assert explicit.submit(int, tt="fake").result(WAIT) == 0


# --------------------------------------- the really installed test plugin


def test_installed_plugin_is_seen_by_importlib_metadata():
    eps = {ep.name: ep for ep in entry_points(group="atasker")}
    assert "testplugin" in eps, "make venv installs tests/plugins/atasker-testplugin"
    assert eps["testplugin"].dist.name == "atasker-testplugin"


def test_installed_plugin_loads_through_its_entry_point(make_supervisor):
    import atasker_testplugin

    sup = make_supervisor(autoload=True)
    record = sup.plugin_manager.records["testplugin"]
    assert (record.distribution, record.version) == ("atasker-testplugin", "1.2.3")
    task = sup.submit(pow, (2, 6), tt="testecho", name="through-entry-point")
    assert task.result(WAIT) == ("echo", 64)
    sup.stop()
    assert "through-entry-point" in atasker_testplugin.finished_names


def test_installed_plugin_not_loaded_without_autoload(make_supervisor):
    sup = make_supervisor()  # the autouse fixture disables autoload
    with pytest.raises(UnknownTaskTypeError):
        sup.submit(int, tt="testecho")


def test_cli_plugins_lists_builtins_and_installed_plugin():
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("ATASKER_")}
    out = subprocess.run(
        [sys.executable, "-m", "atasker", "plugins", "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    plugins = {p["name"]: p for p in info["plugins"]}
    assert plugins["testplugin"]["distribution"] == "atasker-testplugin"
    assert "atasker_task_finished" in plugins["testplugin"]["hooks"]
    assert info["task_types"]["thread"] == ["atasker.builtin.thread"]
    assert info["task_types"]["testecho"] == ["testplugin"]
    text = subprocess.run(
        [sys.executable, "-m", "atasker", "plugins"], capture_output=True, text=True, env=env, timeout=60
    )
    assert "atasker.builtin.thread" in text.stdout and "testecho" in text.stdout


def test_supervisor_stays_usable_with_global_default():
    # The global supervisor is built lazily: importing atasker loads no plugin.
    import atasker

    assert isinstance(atasker.task_supervisor, TaskSupervisor)


# ----------------------------------------------------------- status stores


class RecordingStore:
    """A status store that keeps history, to prove the hook works end to end."""

    def __init__(self, url, supervisor):
        self.url = url
        self.live = {}
        self.history = []
        self.closed = False

    def task_queued(self, task):
        self.live[task.id] = task
        self.history.append(("queued", task.id))

    def task_started(self, task):
        self.history.append(("started", task.id))

    def task_finished(self, task):
        self.live.pop(task.id, None)
        self.history.append((task.outcome, task.id))

    def get(self, task_id):
        return self.live.get(task_id)

    def close(self):
        self.closed = True


class StorePlugin:
    __name__ = "recording-store"

    def __init__(self):
        self.stores = []

    @hookimpl
    def atasker_register_status_stores(self, register):
        from atasker import StatusStoreType

        def factory(url, supervisor):
            store = RecordingStore(url, supervisor)
            self.stores.append(store)
            return store

        register(StatusStoreType("recording", factory))


def test_status_store_plugin_selected_by_url(make_supervisor):
    plugin = StorePlugin()
    sup = make_supervisor(plugins=[plugin], status_store="recording://x", pool_size=1, reserve_normal=0)
    store = plugin.stores[-1]
    assert store.url == "recording://x"
    gate = threading.Event()
    running = sup.submit(gate.wait, (WAIT,))
    queued = sup.submit(int)
    assert sup.get_task_info(queued) is queued and queued.status == 0
    assert queued.cancel()

    def fail():
        raise KeyError("x")

    gate.set()
    running.result(WAIT)
    failing = sup.submit(fail)
    with pytest.raises(KeyError):
        failing.result(WAIT)
    sup.stop()
    assert ("completed", running.id) in store.history
    assert ("cancelled", queued.id) in store.history
    assert ("failed", failing.id) in store.history
    assert sup.get_task_info(running) is None and store.closed


def test_status_store_installed_but_not_selected_changes_nothing(make_supervisor, monkeypatch):
    plugin = StorePlugin()
    sup = make_supervisor(plugins=[plugin])
    sup.submit(int).result(WAIT)
    assert plugin.stores == []
    monkeypatch.setenv("ATASKER_STATUS_STORE", "recording://env")
    make_supervisor(plugins=[plugin])
    assert plugin.stores[-1].url == "recording://env"


def test_unknown_status_store_is_a_clear_error(make_supervisor):
    sup = make_supervisor(start=False, status_store="nosuch:///tmp/x")
    with pytest.raises(LookupError, match="unknown status store 'nosuch'; known status stores: 'memory'"):
        sup.start()


def test_status_store_that_raises_on_queue_rejects_the_task_and_stop_still_returns(make_supervisor):
    class Failing(RecordingStore):
        def task_queued(self, task):
            raise OSError("disk gone")

    class FailingPlugin:
        __name__ = "failing-store"

        @hookimpl
        def atasker_register_status_stores(self, register):
            from atasker import StatusStoreType

            register(StatusStoreType("failing", Failing))

    sup = make_supervisor(plugins=[FailingPlugin()], status_store="failing://")
    assert isinstance(sup.status_store, Failing)
    with pytest.raises(OSError, match="disk gone"):
        sup.submit(int)
    assert sup.stop(wait=WAIT)


MISSPELLED_PLUGIN = """
from atasker import hookimpl

@hookimpl
def atasker_task_finshed(task):
    pass
"""


def test_a_misspelled_hook_marks_only_that_plugin_broken(make_supervisor, tmp_path, monkeypatch, capsys):
    write_fake_dist(tmp_path, "typo-dist", "1.0", "typoplug", "typo_plugin_mod", MISSPELLED_PLUGIN)
    write_fake_dist(tmp_path, "fake-dist", "0.9", "fakeplug", "fake_plugin_mod3", FAKE_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    sup = make_supervisor(autoload=True)
    assert sup.submit(pow, (2, 3), tt="fake").result(WAIT) == 8
    error = str(sup.plugin_manager.broken["typoplug"].error)
    assert "'atasker_task_finshed' (did you mean 'atasker_task_finished'?)" in error and "typo-dist 1.0" in error
    assert not sup.plugin_manager.has_plugin("typoplug")
    monkeypatch.delenv("ATASKER_DISABLE_PLUGIN_AUTOLOAD")
    assert cli_main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "typoplug" in out and "BROKEN" in out and "did you mean 'atasker_task_finished'" in out


def test_a_plugin_that_exits_or_fails_to_configure_is_broken_not_fatal(make_supervisor, tmp_path, monkeypatch):
    write_fake_dist(tmp_path, "exit-dist", "1.0", "exitplug", "exit_plugin_mod", "raise SystemExit(3)\n")
    write_fake_dist(
        tmp_path,
        "conf-dist",
        "1.0",
        "confplug",
        "conf_plugin_mod",
        "from atasker import hookimpl\n\n"
        "@hookimpl\ndef atasker_configure(supervisor):\n    raise RuntimeError('no config')\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sup = make_supervisor(autoload=True)
    assert sup.submit(int).result(WAIT) == 0
    broken = sup.plugin_manager.broken
    assert "SystemExit" in str(broken["exitplug"].error)
    assert "no config" in str(broken["confplug"].error) and "atasker_configure" in str(broken["confplug"].error)


def test_register_plugin_refuses_a_misspelled_hook_and_registers_nothing(make_supervisor):
    class Typo:
        @hookimpl
        def atasker_task_startd(self, task):
            pass

    sup = make_supervisor()
    with pytest.raises(pluggy.PluginValidationError, match="did you mean 'atasker_task_started'"):
        sup.register_plugin(Typo())
    assert sup.submit(int).result(WAIT) == 0


def test_plugins_argument_accepts_a_module_also_loaded_by_its_entry_point(make_supervisor, tmp_path, monkeypatch):
    write_fake_dist(tmp_path, "fake-dist", "0.9", "fakeplug", "fake_plugin_mod4", FAKE_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    import fake_plugin_mod4

    sup = make_supervisor(autoload=True, plugins=[fake_plugin_mod4])
    assert sup.submit(pow, (3, 3), tt="fake").result(WAIT) == 27


def test_atasker_plugins_shows_each_task_type_doc(capsys):
    assert cli_main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "thread: atasker.builtin.thread -- run the function in a pool thread" in out
