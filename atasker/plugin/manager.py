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

import difflib
import importlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from atasker.errors import PluginLoadError
from atasker.plugin import hookspecs

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "EXTENSION_PROVIDERS",
    "PluginManager",
    "PluginRecord",
    "env_flag",
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
    "atasker.builtin.watchdog",
    "atasker.builtin.trace",
    "atasker.extras.workers",
    "atasker.extras.futures",
    "atasker.extras.batch",
    "atasker.tools.liveview",
    "atasker.builtin.compat",
)

#: Which built-in plugin adds each extension the supervisor's methods use:
#: named in the error when that plugin is blocked (any plugin may add them).
EXTENSION_PROVIDERS = {
    "thread": "atasker.builtin.thread",
    "mp": "atasker.builtin.mp",
    "aloops": "atasker.builtin.coroutine",
    "workers": "atasker.extras.workers",
    "live": "atasker.tools.liveview",
    "async_jobs": "atasker.builtin.coroutine",
    "compat": "atasker.builtin.compat",
    "futures": "atasker.extras.futures",
    "map": "atasker.extras.batch",
}


def report_internal_error(pm: PluginManager | None, exc: BaseException, where: str) -> None:
    """Log *exc* (raised by *where*) and run the ``atasker_internalerror`` hook; never raises."""
    logger.error("atasker: %s raised %s: %s", where, type(exc).__name__, exc, exc_info=exc)
    if pm is not None and pm.has_impls("atasker_internalerror"):
        try:
            pm.hook.atasker_internalerror(exc=exc, where=where)
        except BaseException:
            logger.exception("atasker_internalerror hook raised")


def _env_list(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def env_flag(name: str) -> bool:
    """Whether environment variable *name* is set to something other than ``0``/``false``/``no``."""
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
        #: Hook calls are traced (``ATASKER_DEBUG_PLUGINS``): no shortcuts.
        self.tracing = False
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
                self.check_hooks(ep.name)
            except (Exception, SystemExit) as exc:  # a plugin that exits at import must not end the program
                if self.has_plugin(ep.name):
                    self.unregister(name=ep.name)
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
                self.check_hooks(modname)
            except (Exception, SystemExit) as exc:
                if self.has_plugin(modname):
                    self.unregister(name=modname)
                self._record_broken(modname, None, None, exc, "module")

    def register_checked(self, plugin: Any, name: str | None = None) -> str | None:
        """Register *plugin*, then :meth:`check_hooks`; on an error nothing stays registered."""
        registered = self.register(plugin, name=name)
        if registered is not None:
            try:
                self.check_hooks(registered)
            except Exception:
                self.unregister(name=registered)
                raise
        return registered

    def configure_new(self, supervisor: Any, configured: set[str]) -> None:
        """Run ``atasker_configure`` of each plugin not in *configured* yet.

        One by one: an implementation that raises marks its plugin broken
        and unregistered, and the rest go on (a pluggy historic call would
        stop at the first error).
        """
        for impl in self.hook.atasker_configure.get_hookimpls():
            if impl.plugin_name in configured:
                continue
            configured.add(impl.plugin_name)
            try:
                impl.function(*[{"supervisor": supervisor}[arg] for arg in impl.argnames])
            except Exception as exc:
                self.record_broken(impl.plugin_name, exc, "hook atasker_configure")
                self.unregister(name=impl.plugin_name)

    def check_hooks(self, name: str) -> None:
        """Raise if plugin *name* implements a hook atasker has no spec for.

        A misspelled hook name (``atasker_task_finshed``) would otherwise be
        an error of the whole plugin manager (pluggy's ``check_pending``),
        breaking every supervisor; here it is this plugin's error, naming
        the closest real hook.

        :raises PluginValidationError: naming the unknown hook(s).
        """
        plugin = self.get_plugin(name)
        unknown = [
            caller.name
            for caller in self.get_hookcallers(plugin) or ()
            if not caller.has_spec()
            and any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls())
        ]
        if unknown:
            known = [n for n in dir(hookspecs) if n.startswith("atasker_")]
            hints = []
            for hook in unknown:
                close = difflib.get_close_matches(hook, known, n=1)
                hints.append(f"{hook!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise pluggy.PluginValidationError(plugin, f"plugin {name!r} implements unknown hook(s) {', '.join(hints)}")

    def record_broken(self, name: str, exc: Exception, what: str) -> None:
        """Mark plugin *name* broken: *what* of it (``"hook atasker_..."``) raised *exc*.

        Its :class:`PluginLoadError` is logged and named in later lookup errors.
        """
        record = self.records.get(name)
        self._record_broken(
            name, record.distribution if record else None, record.version if record else None, exc, what
        )

    def describe(self, name: str) -> str:
        """``'name' (distribution D V)`` for a registered plugin, for messages."""
        record = self.records.get(name)
        return record.describe() if record else repr(name)

    def _record_broken(self, name: str, dist: str | None, version: str | None, exc: BaseException, what: str) -> None:
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

    def observer(self, hook_name: str) -> Callable[[Any], None] | None:
        """The cheapest way to call observer hook *hook_name* with one task.

        ``None`` when no plugin implements it (the dispatcher then skips it);
        the one implementation's function itself when there is exactly one
        plain implementation and tracing is off (a pluggy hook call costs
        about a microsecond, a direct call a tenth of that); otherwise the
        hook.  Rebuild it after every registration change.
        """
        caller = getattr(self.hook, hook_name)
        impls = caller.get_hookimpls()
        if not impls:
            return None
        if len(impls) == 1 and not self.tracing:
            impl = impls[0]
            if not (impl.hookwrapper or impl.wrapper) and tuple(impl.argnames) in (("task",), ()):
                function = impl.function
                return function if impl.argnames else lambda task: function()

        def call(task: Any) -> None:
            caller(task=task)

        return call

    def chain(self, hook_name: str) -> tuple[Callable[..., Any], ...]:
        """The plain implementations of *hook_name*, in pluggy's call order,
        each callable with the hook's arguments as keywords.

        For hooks whose implementations feed each other
        (``atasker_wrap_task_call``), which one pluggy call cannot do.
        Empty when no plugin implements it.  Rebuild it after every
        registration change.
        """
        caller = getattr(self.hook, hook_name)
        every_arg = set(caller.spec.argnames) if caller.spec is not None else set()
        chained = []
        for impl in reversed(caller.get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                continue
            function, names = impl.function, tuple(impl.argnames)
            if set(names) == every_arg:
                chained.append(function)  # takes every argument: called as is, by keyword
                continue

            def call(_function: Callable[..., Any] = function, _names: tuple[str, ...] = names, **kwargs: Any) -> Any:
                return _function(*[kwargs[name] for name in _names])

            chained.append(call)
        return tuple(chained)

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
    if env_flag("ATASKER_DEBUG_PLUGINS"):
        pm.trace.root.setwriter(logger.debug)
        pm.enable_tracing()
        pm.tracing = True
    for blocked in [*_env_list("ATASKER_BLOCK_PLUGINS"), *block]:
        pm.set_blocked(blocked)
    for modname in BUILTIN_PLUGINS:
        if not pm.is_blocked(modname):
            pm.register(importlib.import_module(modname), name=modname)
            pm.records[modname] = PluginRecord(modname, "atasker", _version())
    if autoload is None:
        autoload = not env_flag("ATASKER_DISABLE_PLUGIN_AUTOLOAD")
    if autoload:
        pm.load_entry_points()
    pm.load_modules(_env_list("ATASKER_PLUGINS"))
    for plugin in plugins:
        name: str | None = plugin.__name__ if isinstance(plugin, ModuleType) else None
        # Passed in code and also installed (loaded by its entry point under
        # another name): it is already there.
        if pm.is_registered(plugin) or (name is not None and (pm.is_blocked(name) or pm.has_plugin(name))):
            continue
        pm.register_checked(plugin, name)
    pm.check_pending()
    return pm


def _version() -> str:
    from atasker import __version__

    return __version__
