"""The ``atasker`` command: ``atasker plugins``, ``atasker demo``, and the
sub-commands plugins register (``atasker status``, ``atasker plot``, ...)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from atasker.core.supervisor import TaskSupervisor

__all__ = ["describe_plugins", "main"]


def describe_plugins(supervisor: TaskSupervisor | None = None) -> dict[str, Any]:
    """What is loaded: plugins (with distribution, version, hooks, errors),
    and the task types, queue policies and status stores with their providers."""
    sup = supervisor or TaskSupervisor()
    pm = sup.plugin_manager
    hooks_by_plugin: dict[str, list[str]] = {}
    for hook_name in sorted(name for name in dir(pm.hook) if name.startswith("atasker_")):
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            hooks_by_plugin.setdefault(impl.plugin_name, []).append(hook_name)
    registries = {kind: sup.registry(kind) for kind in ("task type", "queue policy", "status store")}
    provides: dict[str, dict[str, list[str]]] = {}
    docs: dict[str, dict[str, str]] = {}
    for kind, registry in registries.items():
        for record, plugin in registry.records():
            name = registry.key(record)
            provides.setdefault(plugin, {}).setdefault(kind, []).append(name)
            docs.setdefault(kind, {})[name] = getattr(record, "doc", "") or ""
    plugins = []
    for name, record in pm.records.items():
        plugins.append(
            {
                "name": name,
                "distribution": record.distribution,
                "version": record.version,
                "provides": provides.get(name, {}),
                "hooks": hooks_by_plugin.get(name, []),
                "error": None,
            }
        )
    for name, record in pm.broken.items():
        plugins.append(
            {
                "name": name,
                "distribution": record.distribution,
                "version": record.version,
                "provides": {},
                "hooks": [],
                "error": str(record.error),
            }
        )
    result: dict[str, Any] = {"plugins": plugins}
    for kind, registry in registries.items():
        key = {"task type": "task_types", "queue policy": "queue_policies", "status store": "status_stores"}[kind]
        result[key] = {name: registry.providers_of(name) for name in registry.names()}
        result[key.replace("_", " ") + " docs"] = docs.get(kind, {})
    return result


def _print_plugins(info: dict[str, Any]) -> None:
    print("plugins:")
    for plugin in info["plugins"]:
        dist = f"{plugin['distribution']} {plugin['version']}" if plugin["distribution"] else "-"
        print(f"  {plugin['name']}  [{dist}]")
        if plugin["error"]:
            print(f"    BROKEN: {plugin['error']}")
        for kind, names in plugin["provides"].items():
            print(f"    {kind}: {', '.join(names)}")
        if plugin["hooks"]:
            print(f"    hooks: {', '.join(plugin['hooks'])}")
    for key, title in (
        ("task_types", "task types"),
        ("queue_policies", "queue policies"),
        ("status_stores", "status stores"),
    ):
        print(f"{title}:")
        docs = info.get(key.replace("_", " ") + " docs", {})
        for name, providers in info[key].items():
            clash = "  (CONFLICT: pick one with ATASKER_PROVIDERS)" if len(providers) > 1 else ""
            doc = f" -- {docs[name]}" if docs.get(name) else ""
            print(f"  {name}: {', '.join(providers)}{clash}{doc}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``atasker`` command."""
    parser = argparse.ArgumentParser(prog="atasker", description="atasker command-line tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p_plugins = sub.add_parser("plugins", help="list plugins, task types, policies and stores")
    p_plugins.add_argument("--json", action="store_true", help="machine-readable output")
    p_demo = sub.add_parser("demo", help="watch priorities and reserves at work")
    p_demo.add_argument("--quick", action="store_true", help="a shorter run (a few seconds)")
    p_demo.add_argument(
        "--engine",
        choices=("local", "dask"),
        default="local",
        help="where CPU-bound tasks run: the process pool, or a local Dask cluster (needs atasker-dask)",
    )
    p_demo.add_argument("--out", default="atasker-demo", help="folder for trace.json and timeline.png")
    commands = {}
    for command, _plugin in TaskSupervisor(name="atasker-cli").registry("command").records():
        if command.name in ("plugins", "demo") or command.name in commands:
            continue
        commands[command.name] = command
        command.add_arguments(sub.add_parser(command.name, help=command.help))
    args = parser.parse_args(argv)
    if args.command == "plugins":
        info = describe_plugins()
        if args.json:
            json.dump(info, sys.stdout, indent=2)
            print()
        else:
            _print_plugins(info)
        return 0
    if args.command == "demo":
        from atasker.tools.demo import run_demo

        try:
            return run_demo(quick=args.quick, engine=args.engine, out=args.out)
        except KeyboardInterrupt:
            print("atasker demo: interrupted", file=sys.stderr)
            return 130  # 128 + SIGINT, as a shell reports it
    return int(commands[args.command].run(args))
