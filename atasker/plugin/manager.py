"""Plugin manager: built-ins, blocking, entry points, registries.

Loading order (one manager per supervisor, built on first use)::

    hook specs -> blocks -> built-in plugins (atasker.builtin.*)
               -> entry points of group "atasker", one by one
               -> ATASKER_PLUGINS modules -> plugins passed in code
               -> check_pending()

A plugin that fails to import is recorded, logged, and named in the error of
whatever it would have provided; it does not break unrelated work.

Switches (environment):

* ``ATASKER_DISABLE_PLUGIN_AUTOLOAD=1`` -- do not load entry points;
* ``ATASKER_PLUGINS=mod1,mod2`` -- import and register these modules;
* ``ATASKER_BLOCK_PLUGINS=name1,name2`` -- never register these plugins
  (built-ins too, e.g. ``atasker.builtin.thread``);
* ``ATASKER_PROVIDERS=tt=plugin,...`` -- which plugin provides a name that
  two plugins register;
* ``ATASKER_DEBUG_PLUGINS=1`` -- trace hook calls to the ``atasker`` logger.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Generic, TypeVar

import pluggy

from atasker.errors import PluginConflictError, PluginLoadError
from atasker.plugin import hookspecs

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "PluginManager",
    "PluginRecord",
    "Registry",
    "make_plugin_manager",
]

logger = logging.getLogger("atasker")

ENTRY_POINT_GROUP = "atasker"

#: Built-in plugins, registered under these names (block them by name).
BUILTIN_PLUGINS = (
    "atasker.builtin.thread",
    "atasker.builtin.mp",
    "atasker.builtin.coroutine",
    "atasker.builtin.policy",
    "atasker.builtin.memory_store",
    "atasker.builtin.sqlite_store",
)


def _env_list(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def env_providers() -> dict[str, str]:
    """Parse ``ATASKER_PROVIDERS=name=plugin,...``."""
    providers = {}
    for item in _env_list("ATASKER_PROVIDERS"):
        name, sep, plugin = item.partition("=")
        if not sep:
            raise ValueError(f"ATASKER_PROVIDERS: expected name=plugin, got {item!r}")
        providers[name.strip()] = plugin.strip()
    return providers


@dataclass(frozen=True)
class PluginRecord:
    """What ``atasker plugins`` lists for one plugin."""

    name: str
    distribution: str | None
    version: str | None
    error: BaseException | None = None

    def describe(self) -> str:
        """``name (dist version)`` -- for messages."""
        if self.distribution:
            return f"{self.name!r} (distribution {self.distribution} {self.version})"
        return repr(self.name)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus provenance, load errors and a generation counter.

    ``generation`` changes on every register/unregister so that callers can
    cache "does this hook have implementations" cheaply.
    """

    def __init__(self) -> None:
        super().__init__("atasker")
        self.add_hookspecs(hookspecs)
        self.generation = 0
        self.records: dict[str, PluginRecord] = {}
        self.broken: dict[str, PluginRecord] = {}
        self._listeners: list[Callable[[], None]] = []

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        logger.debug("atasker plugin registered: %r", registered)
        if registered is not None and registered not in self.records:
            self.records[registered] = PluginRecord(registered, None, None)
        self._changed()
        return registered

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        removed = super().unregister(plugin, name)
        self.records.pop(name or self.get_name(removed) or "", None)
        self._changed()
        return removed

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call *listener* after every register/unregister."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        self.generation += 1
        for listener in self._listeners:
            listener()

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Register every plugin of entry-point *group*, one by one.

        A plugin that fails to load is recorded in :attr:`broken` (with a
        :class:`PluginLoadError` chaining the cause) and logged; loading goes on.
        """
        for ep in entry_points(group=group):
            if self.is_blocked(ep.name) or self.has_plugin(ep.name):
                continue
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            try:
                plugin = ep.load()
                self.register(plugin, name=ep.name)
            except Exception as exc:
                self._record_broken(ep.name, dist_name, version, exc, f"entry point {ep.value!r}")
                continue
            self.records[ep.name] = PluginRecord(ep.name, dist_name, version)

    def load_modules(self, names: Iterable[str]) -> None:
        """Import and register modules by dotted name (``ATASKER_PLUGINS``)."""
        for modname in names:
            if self.is_blocked(modname) or self.has_plugin(modname):
                continue
            try:
                self.register(importlib.import_module(modname), name=modname)
            except Exception as exc:
                self._record_broken(modname, None, None, exc, "module")

    def _record_broken(self, name: str, dist: str | None, version: str | None, exc: Exception, what: str) -> None:
        where = f"{what} of distribution {dist} {version}" if dist else what
        error = PluginLoadError(f"atasker plugin {name!r} ({where}) failed to load: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        self.broken[name] = PluginRecord(name, dist, version, error)
        logger.warning("%s", error)

    def broken_note(self) -> str:
        """A sentence naming broken plugins, to append to lookup errors."""
        if not self.broken:
            return ""
        items = "; ".join(str(rec.error) for rec in self.broken.values())
        return f" (plugins that failed to load and may provide it: {items})"

    def has_impls(self, hook_name: str) -> bool:
        """Whether any registered plugin implements *hook_name* (cheap)."""
        return bool(getattr(self.hook, hook_name).get_hookimpls())


def make_plugin_manager(
    plugins: Iterable[Any] = (),
    block: Iterable[str] = (),
    autoload: bool | None = None,
) -> PluginManager:
    """Build a plugin manager in the documented loading order.

    :param plugins: extra plugin objects or modules to register last.
    :param block: plugin names never to register (adds to
        ``ATASKER_BLOCK_PLUGINS``).
    :param autoload: load entry points; default: unless
        ``ATASKER_DISABLE_PLUGIN_AUTOLOAD`` is set.
    """
    pm = PluginManager()
    if _env_flag("ATASKER_DEBUG_PLUGINS"):
        pm.trace.root.setwriter(logger.debug)
        pm.enable_tracing()
    for name in [*_env_list("ATASKER_BLOCK_PLUGINS"), *block]:
        pm.set_blocked(name)
    for modname in BUILTIN_PLUGINS:
        if not pm.is_blocked(modname):
            pm.register(importlib.import_module(modname), name=modname)
            pm.records[modname] = PluginRecord(modname, "atasker", _version())
    if autoload is None:
        autoload = not _env_flag("ATASKER_DISABLE_PLUGIN_AUTOLOAD")
    if autoload:
        pm.load_entry_points()
    pm.load_modules(_env_list("ATASKER_PLUGINS"))
    for plugin in plugins:
        name = plugin.__name__ if isinstance(plugin, ModuleType) else None
        if name is None or not (pm.is_blocked(name) or pm.has_plugin(name)):
            pm.register(plugin, name=name)
    pm.check_pending()
    return pm


def _version() -> str:
    from atasker import __version__

    return __version__


T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> records collected from one ``atasker_register_*`` hook.

    Keeps which plugin registered what, so that a clash can name both.
    """

    def __init__(
        self,
        pm: PluginManager,
        hook_name: str,
        kind: str,
        key: Callable[[T], str],
        providers: dict[str, str] | None = None,
        unknown_error: type[LookupError] = LookupError,
    ) -> None:
        self.kind = kind
        self._pm = pm
        self._providers = providers or {}
        self._unknown_error = unknown_error
        self.entries: dict[str, list[tuple[T, str]]] = {}
        # We call each implementation ourselves (not hook(...)) to know which
        # plugin registered what; pluggy's order (LIFO) is kept.
        for impl in getattr(pm.hook, hook_name).get_hookimpls():

            def register(record: T, _plugin: str = impl.plugin_name) -> None:
                logger.debug("plugin %r registered %s %r", _plugin, kind, key(record))
                self.entries.setdefault(key(record), []).append((record, _plugin))

            try:
                impl.function(*[{"register": register}[arg] for arg in impl.argnames])
            except Exception as exc:
                record = pm.records.get(impl.plugin_name)
                pm._record_broken(
                    impl.plugin_name,
                    record.distribution if record else None,
                    record.version if record else None,
                    exc,
                    f"hook {hook_name}",
                )

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self.entries)

    def providers_of(self, name: str) -> list[str]:
        """Plugin names that registered *name*."""
        return [plugin for _, plugin in self.entries.get(name, [])]

    def get(self, name: str) -> T:
        """The record for *name*; raises if unknown or claimed twice."""
        candidates = self.entries.get(name)
        if not candidates:
            known = ", ".join(repr(n) for n in self.names()) or "none"
            plural = self.kind[:-1] + "ies" if self.kind.endswith("y") else self.kind + "s"
            raise self._unknown_error(f"unknown {self.kind} {name!r}; known {plural}: {known}" + self._pm.broken_note())
        if len(candidates) == 1:
            return candidates[0][0]
        chosen = self._providers.get(name)
        for record, plugin in candidates:
            if plugin == chosen:
                return record
        names = " and ".join(self._describe(plugin) for _, plugin in candidates)
        first = candidates[-1][1]
        raise PluginConflictError(
            f"{self.kind} {name!r} is provided by more than one plugin: {names}. "
            f"Pick one with TaskSupervisor(providers={{{name!r}: {first!r}}}) or "
            f"ATASKER_PROVIDERS={name}={first}, or block the other with "
            f"TaskSupervisor(block_plugins=[...]) or ATASKER_BLOCK_PLUGINS."
        )

    def _describe(self, plugin: str) -> str:
        record = self._pm.records.get(plugin)
        return record.describe() if record else repr(plugin)
