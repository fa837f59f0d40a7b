"""The minimal core: built-ins as blockable plugins, the hooks a plugin
author needs, one submission record, one timer, and the shape of the tree."""

from __future__ import annotations

import argparse
import ast
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from atasker import (
    TASK_HIGH,
    TASK_LOW,
    BaseExecutor,
    CommandType,
    InvalidPriorityError,
    MissingExtensionError,
    QueuePolicyType,
    TaskSpec,
    TaskSupervisor,
    TaskType,
    UnknownQueuePolicyError,
    UnknownStatusStoreError,
    background_task,
    hookimpl,
)
from atasker.builtin.policy import PriorityPolicy
from atasker.core.timer import Timer
from atasker.tools.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
WAIT = 30


class ThreadPerTask(BaseExecutor):
    """A third-party executor written as docs/writing_plugins.rst says."""

    def start(self, task):
        threading.Thread(target=self._run, args=(task,), daemon=True).start()

    def _run(self, task):
        try:
            result = task.run()
        except BaseException as exc:
            self.supervisor.task_done(task, exception=exc)
        else:
            self.supervisor.task_done(task, result=result)


class ThreadPerTaskPlugin:
    @hookimpl
    def atasker_register_task_types(self, register):
        register(TaskType("perthread", ThreadPerTask, pool_size=2, reserve_normal=0, reserve_high=0))


# ------------------------------------------------------------- blocking built-ins


@pytest.mark.parametrize(
    ("plugin", "call"),
    [
        ("atasker.builtin.coroutine", lambda sup: sup.create_aloop("x")),
        ("atasker.builtin.coroutine", lambda sup: sup.get_aloops()),
        ("atasker.builtin.coroutine", lambda sup: sup.set_coroutine_pool(pool_size=1)),
        ("atasker.builtin.mp", lambda sup: sup.create_mp_pool(pool_size=1)),
        ("atasker.builtin.mp", lambda sup: sup.set_mp_pool(pool_size=1)),
        ("atasker.builtin.thread", lambda sup: sup.set_thread_pool(pool_size=1)),
        ("atasker.extras.workers", lambda sup: sup.get_workers()),
        ("atasker.extras.futures", lambda sup: sup.as_executor()),
        ("atasker.tools.liveview", lambda sup: sup.live()),
    ],
)
def test_a_blocked_builtin_takes_its_methods_with_it(make_supervisor, plugin, call):
    sup = make_supervisor(block_plugins=[plugin])
    with pytest.raises(MissingExtensionError, match=rf"needs plugin {plugin!r}.*which is blocked"):
        call(sup)
    # The rest keeps working.
    assert (
        sup.submit(pow, (2, 5), tt="perthread" if plugin == "atasker.builtin.thread" else "thread").result(WAIT) == 32
        if plugin != "atasker.builtin.thread"
        else True
    )


@pytest.mark.parametrize(
    ("plugin", "tt"),
    [("atasker.builtin.thread", "thread"), ("atasker.builtin.mp", "mp"), ("atasker.builtin.coroutine", "coroutine")],
)
def test_a_blocked_builtin_task_type_is_unknown(make_supervisor, plugin, tt):
    sup = make_supervisor(block_plugins=[plugin], plugins=[ThreadPerTaskPlugin()])
    assert tt not in sup.task_types()
    with pytest.raises(LookupError, match=f"unknown task type {tt!r}"):
        sup.submit(pow, (2, 3), tt=tt)
    assert sup.submit(pow, (2, 3), tt="perthread").result(WAIT) == 8


def test_blocking_the_trace_plugin_refuses_trace_by_name(make_supervisor, tmp_path):
    sup = make_supervisor(block_plugins=["atasker.builtin.trace"], start=False)
    with pytest.raises(TypeError, match="trace= needs plugin 'atasker.builtin.trace', which is blocked"):
        sup.start(trace=str(tmp_path / "t.json"))
    assert not sup.is_active()


def test_blocking_the_watchdog_turns_warnings_off(make_supervisor):
    warned = []
    sup = make_supervisor(
        pool_size=1,
        reserve_normal=0,
        reserve_high=0,
        timeout_warning=0.0,
        timeout_warning_func=warned.append,
        block_plugins=["atasker.builtin.watchdog"],
    )
    gate = threading.Event()
    first = sup.submit(gate.wait, (WAIT,))
    waiting = sup.submit(int)
    with pytest.raises(MissingExtensionError):
        sup.extension("watchdog")
    gate.set()
    assert first.result(WAIT) and waiting.result(WAIT) == 0
    assert warned == []


# -------------------------------------------------------- a third-party executor


def test_a_base_executor_needs_only_start_and_stop_from_its_task_does_not_hang(make_supervisor):
    sup = make_supervisor(plugins=[ThreadPerTaskPlugin()])
    assert sup.submit(pow, (3, 2), tt="perthread").result(WAIT) == 9
    with pytest.raises(ZeroDivisionError):
        sup.submit(lambda: 1 / 0, tt="perthread").result(WAIT)
    # stop(wait=True) from inside a task on the executor's own thread: the
    # core knows (Task.run) that the thread runs that task.
    other = sup.submit(time.sleep, (0.05,), tt="perthread")
    stopper = sup.submit(sup.stop, tt="perthread")
    assert stopper.result(WAIT) is True
    assert other.done()


def test_an_executor_missing_methods_is_named_at_registration(make_supervisor, caplog):
    class Incomplete:
        def __init__(self, supervisor, pool):
            pass

        def start(self, task):
            pass

    class Plugin:
        @hookimpl
        def atasker_register_task_types(self, register):
            register(TaskType("incomplete", Incomplete))

    sup = make_supervisor(plugins=[Plugin()])
    with pytest.raises(LookupError, match=r"unknown task type 'incomplete'.*lacks validate, cancel, capacity"):
        sup.submit(int, tt="incomplete")
    assert sup.submit(int).result(WAIT) == 0


# ------------------------------------------------------------------- the hooks


def test_configure_is_historic_and_runs_once_per_supervisor(make_supervisor):
    calls = []

    class Late:
        @hookimpl
        def atasker_configure(self, supervisor):
            calls.append(supervisor)
            supervisor.add_extension("late", self)

    sup = make_supervisor()
    sup.submit(int).result(WAIT)
    plugin = Late()
    sup.register_plugin(plugin)
    assert calls == [sup] and sup.extension("late") is plugin
    sup.register_plugin(object())  # another registration does not replay it
    assert calls == [sup]


def test_registration_hooks_run_once_per_supervisor_and_plugin(make_supervisor):
    calls = []

    class Counting:
        @hookimpl
        def atasker_register_task_types(self, register):
            calls.append(1)
            register(TaskType("counted", ThreadPerTask))

    sup = make_supervisor(plugins=[Counting()])
    for _ in range(3):
        sup.submit(int, tt="counted").result(WAIT)
        sup.register_plugin(object())
        assert "counted" in sup.task_types()
    assert calls == [1]


def test_select_queue_policy_per_task_type(make_supervisor):
    made = []

    class Fifo(PriorityPolicy):
        def __init__(self, pool):
            super().__init__(pool)
            made.append(pool.tt)

    class Chooser:
        @hookimpl
        def atasker_register_queue_policies(self, register):
            register(QueuePolicyType("fifo-ish", Fifo))

        @hookimpl
        def atasker_select_queue_policy(self, supervisor, task_type):
            return "fifo-ish" if task_type.name == "perthread" else None

    sup = make_supervisor(plugins=[Chooser(), ThreadPerTaskPlugin()])
    sup.submit(int).result(WAIT)
    sup.submit(int, tt="perthread").result(WAIT)
    assert made == ["perthread"]


def test_unknown_policy_and_store_raise_the_named_errors(make_supervisor):
    sup = make_supervisor(queue_policy="nope", start=False)
    with pytest.raises(UnknownQueuePolicyError, match="unknown queue policy 'nope'; known queue policies: 'priority'"):
        sup.start()
    sup = make_supervisor(status_store="redis://x", start=False)
    with pytest.raises(UnknownStatusStoreError, match="unknown status store 'redis'"):
        sup.start()
    assert not sup.is_active()


def test_starting_and_stopping_hooks_see_options_and_the_order(make_supervisor):
    events = []

    class Lifecycle:
        @hookimpl
        def atasker_supervisor_starting(self, supervisor, options):
            events.append(("starting", dict(options)))
            return ["colour"]

        @hookimpl
        def atasker_supervisor_stopping(self, supervisor, wait, cancel_tasks):
            events.append(("stopping", supervisor.is_active(), wait))

        @hookimpl
        def atasker_supervisor_stopped(self, supervisor, all_done):
            events.append(("stopped", supervisor.is_active(), all_done))

    sup = make_supervisor(plugins=[Lifecycle()], start=False)
    with pytest.raises(TypeError, match="no registered plugin handles: flavour"):
        sup.start(flavour="x")
    sup.start(colour="blue")
    assert sup.stop() is True
    assert events == [
        ("starting", {"flavour": "x"}),
        ("starting", {"colour": "blue"}),
        ("stopping", True, True),
        ("stopped", False, True),
    ]


def test_task_waiting_is_called_only_for_tasks_that_wait(make_supervisor):
    waited = []

    class Observer:
        @hookimpl
        def atasker_task_waiting(self, task):
            waited.append(task.name)

    sup = make_supervisor(pool_size=1, reserve_normal=0, reserve_high=0, plugins=[Observer()])
    gate = threading.Event()
    first = sup.submit(gate.wait, (WAIT,), name="first")
    second = sup.submit(int, name="second")
    gate.set()
    assert first.result(WAIT) and second.result(WAIT) == 0
    assert waited == ["second"]


def test_register_commands_adds_a_cli_subcommand(monkeypatch, capsys):
    class Hello:
        @staticmethod
        def add(parser: argparse.ArgumentParser) -> None:
            parser.add_argument("who")

        @staticmethod
        def run(args: argparse.Namespace) -> int:
            print(f"hello {args.who}")
            return 3

        @hookimpl
        def atasker_register_commands(self, register):
            register(CommandType("hello", "say hello", self.add, self.run))

    import atasker.plugin.manager as manager

    real = manager.make_plugin_manager

    def with_hello(plugins=(), block=(), autoload=None):
        return real([*plugins, Hello()], block, autoload)

    monkeypatch.setattr("atasker.core.supervisor.make_plugin_manager", with_hello)
    assert cli_main(["hello", "world"]) == 3
    assert capsys.readouterr().out == "hello world\n"


# ------------------------------------------------------------- one TaskSpec


def test_task_spec_is_validated_once_and_carries_every_option(make_supervisor):
    with pytest.raises(ValueError, match="delay must be a finite number"):
        TaskSpec(delay=math.inf)
    with pytest.raises(ValueError, match="timeout must be a finite number"):
        TaskSpec(timeout=math.nan)
    with pytest.raises(TypeError, match="unknown task option"):
        TaskSpec().replace(prio=1)
    sup = make_supervisor()
    seen = []
    spec = TaskSpec(priority=TASK_HIGH, name="named", callback=seen.append, options={"k": 1})
    task = sup.submit(pow, (2, 2), spec=spec)
    assert task.result(WAIT) == 4 and seen == [4]
    assert (task.priority, task.name, task.options, task.spec) == (TASK_HIGH, "named", {"k": 1}, spec)
    # Keywords override the record.
    assert sup.submit(pow, (2, 3), spec=spec, priority=TASK_LOW).priority == TASK_LOW


def test_background_task_reaches_plugin_options(make_supervisor):
    sup = make_supervisor(plugins=[ThreadPerTaskPlugin()])
    start = background_task(lambda: 7, tt="perthread", supervisor=sup, options={"plugin_option": "x"})
    task = start()
    assert task.result(WAIT) == 7 and task.options == {"plugin_option": "x"}


# ------------------------------------------------------------------- one timer


def test_the_timer_survives_inf_and_refuses_nan():
    errors = []
    timer = Timer("t", lambda exc, where: errors.append(exc))
    try:
        fired = threading.Event()
        timer.call_at(math.inf, fired.set)
        timer.call_later(1e300, fired.set)
        with pytest.raises(ValueError):
            timer.call_at(math.nan, fired.set)
        soon = threading.Event()
        handle = timer.call_later(0, fired.set)
        handle.cancel()
        timer.call_later(0.01, soon.set)
        assert soon.wait(WAIT) and not fired.is_set()
        timer.call_later(0, lambda: (_ for _ in ()).throw(SystemExit))
        again = threading.Event()
        timer.call_later(0.01, again.set)
        assert again.wait(WAIT) and len(errors) == 1
    finally:
        timer.stop()


def test_delays_and_process_deadlines_share_the_supervisor_timer(make_supervisor):
    sup = make_supervisor()
    sup.start()
    names = {t.name for t in threading.enumerate()}
    assert sum("timer" in n for n in names if sup.name in n) == 1
    delayed = sup.submit(int, delay=0.01)
    assert sup.get_info()["delayed"] in (0, 1)
    assert delayed.result(WAIT) == 0


# ---------------------------------------------------------------- the tree


def _modules() -> dict[str, Path]:
    return {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (ROOT / "atasker").rglob("*.py")
    }


def test_no_import_cycle_inside_atasker():
    """Counting type-only imports too: the package is a layered graph."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target in modules and target != name and target != "atasker":
                    deps.add(target)
        graph[name] = deps
    # A package's __init__ re-exporting its own modules is not a cycle.
    for name in graph:
        graph[name] = {d for d in graph[name] if not (name.startswith(d + ".") and d != name)}
        if modules[name].name == "__init__.py":
            graph[name] = {d for d in graph[name] if not d.startswith(name + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_module_is_over_about_600_lines():
    sources = list((ROOT / "atasker").rglob("*.py")) + list((ROOT / "plugins").glob("*/src/*/*.py"))
    big = {str(p.relative_to(ROOT)): n for p in sources if (n := len(p.read_text().splitlines())) > 630}
    assert big == {}


def _core_private_names() -> set[str]:
    names = set()
    for path in [*(ROOT / "atasker" / "core").glob("*.py"), *(ROOT / "atasker" / "plugin").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                names.add(node.attr)
            if (
                isinstance(node, (ast.FunctionDef, ast.ClassDef))
                and node.name.startswith("_")
                and not node.name.startswith("__")
            ):
                names.add(node.name)
    return names


def test_builtins_and_plugins_touch_no_private_name_of_the_core():
    private = _core_private_names()
    # Names a plugin may use for its own objects all the same.
    own_state = {"_lock", "_pool", "_run", "_state", "_thread", "_timer", "_closing", "_stopped", "_seq", "_cond"}
    crossings = []
    roots = [ROOT / "atasker" / d for d in ("builtin", "extras", "tools", "testing")] + [ROOT / "plugins"]
    for root in roots:
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in private and node.attr not in own_state:
                    base = ast.unparse(node.value)
                    if base in ("self", "cls") or base.startswith("self."):
                        continue
                    crossings.append(f"{path.relative_to(ROOT)}:{node.lineno}: {base}.{node.attr}")
                if (
                    isinstance(node, ast.ImportFrom)
                    and node.module
                    and node.module.startswith(("atasker.core", "atasker.plugin"))
                ):
                    crossings += [
                        f"{path.relative_to(ROOT)}:{node.lineno}: import {a.name}"
                        for a in node.names
                        if a.name.startswith("_")
                    ]
    assert crossings == []


def test_the_supervisor_inherits_no_feature():
    assert TaskSupervisor.__mro__ == (TaskSupervisor, object)


def test_importing_atasker_starts_nothing():
    code = "import threading, atasker; assert threading.active_count() == 1, threading.enumerate(); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT)
    assert out.stdout.strip() == "ok", out.stderr


def test_submit_keywords_make_one_record_per_distinct_value_and_still_validate(make_supervisor):
    sup = make_supervisor()
    first = sup.submit(int, tt="thread", priority=1)
    second = sup.submit(int, tt="thread", priority=1)
    assert first.spec is second.spec
    with pytest.raises(InvalidPriorityError):
        sup.submit(int, tt="thread", priority=True)
    named = sup.submit(int, name="a")
    assert named.spec is not sup.submit(int, name="a").spec  # names are not cached
    assert [t.result(WAIT) for t in (first, second, named)] == [0, 0, 0]


def test_observers_are_called_directly_or_through_the_hook_alike(make_supervisor):
    seen = []
    done = threading.Semaphore(0)

    class One:
        @hookimpl
        def atasker_task_finished(self, task):
            seen.append(("one", task.name))
            done.release()

    class Bare:
        @hookimpl
        def atasker_task_finished(self):
            seen.append(("bare", None))
            done.release()

    sup = make_supervisor(plugins=[One()])
    sup.submit(int, name="a")
    assert done.acquire(timeout=WAIT)
    sup.register_plugin(Bare())  # two implementations: through the hook
    sup.submit(int, name="b")
    assert done.acquire(timeout=WAIT) and done.acquire(timeout=WAIT)
    assert seen[0] == ("one", "a") and sorted(seen[1:], key=str) == [("bare", None), ("one", "b")]


@pytest.mark.parametrize(
    ("plugin", "option", "error", "match"),
    [
        ("atasker.builtin.policy", {}, UnknownQueuePolicyError, "unknown queue policy 'priority'"),
        ("atasker.builtin.memory_store", {}, UnknownStatusStoreError, "unknown status store 'memory'"),
        ("atasker.builtin.sqlite_store", {"status_store": "sqlite:///x.db"}, UnknownStatusStoreError, "'sqlite'"),
    ],
)
def test_a_blocked_policy_or_store_is_a_named_error(make_supervisor, plugin, option, error, match):
    sup = make_supervisor(block_plugins=[plugin], start=False, **option)
    with pytest.raises(error, match=match):
        sup.start()
    assert not sup.is_active()


def test_blocking_the_sqlite_plugin_removes_atasker_status(monkeypatch, capsys):
    monkeypatch.setenv("ATASKER_BLOCK_PLUGINS", "atasker.builtin.sqlite_store")
    with pytest.raises(SystemExit):
        cli_main(["status", "--help"])
    assert "invalid choice: 'status'" in capsys.readouterr().err
