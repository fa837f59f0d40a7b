"""Registries: names -> typed records, collected from ``atasker_register_*`` hooks.

Each plugin's registration hook runs once per supervisor: when the
registry is first used for the plugins registered by then, and once more
for each plugin registered later (at the next lookup).  A plugin that is
unregistered takes its records with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from atasker.errors import (
    PluginConflictError,
    UnknownQueuePolicyError,
    UnknownStatusStoreError,
    UnknownTaskTypeError,
)
from atasker.plugin.manager import PluginManager
from atasker.plugin.protocols import (
    EXECUTOR_MEMBERS,
    QUEUE_POLICY_MEMBERS,
    STATUS_STORE_MEMBERS,
    missing_members,
)

__all__ = ["Registry", "factory_check", "make_registries"]

logger = logging.getLogger("atasker")

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> records of one kind (task types, queue policies, status stores).

    Keeps which plugin registered what, so that a clash can name both.

    :param pm: the plugin manager.
    :param hook_name: the ``atasker_register_*`` hook that fills it.
    :param kind: ``"task type"`` etc., for messages.
    :param key: the record's name (``record.name``, ``record.scheme``).
    :param providers: ``{name: plugin}`` -- who wins a contested name.
    :param unknown_error: raised for a name nobody registered.
    :param check: ``check(record, plugin)`` -> an error message for a bad
        record, or ``None``; a bad record marks its plugin broken.
    """

    def __init__(
        self,
        pm: PluginManager,
        hook_name: str,
        kind: str,
        key: Callable[[T], str],
        providers: dict[str, str],
        unknown_error: type[LookupError],
        check: Callable[[T], str | None] = lambda record: None,
    ) -> None:
        self.kind = kind
        self._pm = pm
        self._hook_name = hook_name
        self._key = key
        self._providers = providers
        self._unknown_error = unknown_error
        self._check = check
        self.entries: dict[str, list[tuple[T, str]]] = {}
        self._synced: set[str] = set()
        self._generation = -1
        self.sync()

    def sync(self) -> None:
        """Run the registration hook of plugins registered since the last sync."""
        pm = self._pm
        if pm.generation == self._generation:
            return
        self._generation = pm.generation
        impls = {impl.plugin_name: impl for impl in getattr(pm.hook, self._hook_name).get_hookimpls()}
        for gone in self._synced - set(impls):
            self._synced.discard(gone)
            for name in list(self.entries):
                self.entries[name] = [entry for entry in self.entries[name] if entry[1] != gone]
                if not self.entries[name]:
                    del self.entries[name]
        # pluggy's order (LIFO) is kept; each implementation is called by us,
        # not through the hook, to know which plugin registered what.
        for plugin_name, impl in impls.items():
            if plugin_name in self._synced:
                continue
            self._synced.add(plugin_name)
            records: list[T] = []
            try:
                impl.function(*[{"register": records.append}[arg] for arg in impl.argnames])
                for record in records:
                    problem = self._check(record)
                    if problem is not None:
                        raise TypeError(f"{self.kind} {self._key(record)!r}: {problem}")
            except Exception as exc:
                pm.record_broken(plugin_name, exc, f"hook {self._hook_name}")
                continue
            for record in records:
                logger.debug("plugin %r registered %s %r", plugin_name, self.kind, self._key(record))
                self.entries.setdefault(self._key(record), []).append((record, plugin_name))

    def key(self, record: T) -> str:
        """The name *record* is registered under."""
        return self._key(record)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self.sync()
        return sorted(self.entries)

    def providers_of(self, name: str) -> list[str]:
        """Plugin names that registered *name*."""
        self.sync()
        return [plugin for _, plugin in self.entries.get(name, [])]

    def records(self) -> list[tuple[T, str]]:
        """Every ``(record, plugin name)``, sorted by name."""
        self.sync()
        return [entry for name in sorted(self.entries) for entry in self.entries[name]]

    def get(self, name: str) -> T:
        """The record for *name*.

        :raises LookupError: (the registry's *unknown_error*) nobody registered it.
        :raises PluginConflictError: two plugins did and no provider was chosen.
        """
        self.sync()
        candidates = self.entries.get(name)
        if not candidates:
            known = ", ".join(repr(n) for n in sorted(self.entries)) or "none"
            plural = self.kind[:-1] + "ies" if self.kind.endswith("y") else self.kind + "s"
            raise self._unknown_error(f"unknown {self.kind} {name!r}; known {plural}: {known}" + self._pm.broken_note())
        if len(candidates) == 1:
            return candidates[0][0]
        chosen = self._providers.get(name)
        for record, plugin in candidates:
            if plugin == chosen:
                return record
        names = " and ".join(self._pm.describe(plugin) for _, plugin in candidates)
        first = candidates[-1][1]
        raise PluginConflictError(
            f"{self.kind} {name!r} is provided by more than one plugin: {names}. "
            f"Pick one with TaskSupervisor(providers={{{name!r}: {first!r}}}) or "
            f"ATASKER_PROVIDERS={name}={first}, or block the other with "
            f"TaskSupervisor(block_plugins=[...]) or ATASKER_BLOCK_PLUGINS."
        )

    def __repr__(self) -> str:
        return f"<Registry {self.kind}: {', '.join(sorted(self.entries))}>"


def factory_check(kind: str, attribute: str, members: tuple[str, ...]) -> Callable[[Any], str | None]:
    """A registry check: a record whose factory is a class lacking *members* is refused."""

    def check(record: Any) -> str | None:
        factory = getattr(record, attribute)
        if not callable(factory):
            return f"{attribute} must be callable, got {factory!r}"
        missing = missing_members(factory, members) if isinstance(factory, type) else []
        if missing:
            return f"{kind} class {factory.__qualname__} lacks {', '.join(missing)}"
        return None

    return check


def make_registries(pm: PluginManager, providers: dict[str, str]) -> dict[str, Registry[Any]]:
    """The four registries of one supervisor: task types, queue policies,
    status stores and commands, each refusing a record whose factory class
    lacks a protocol member."""
    return {
        "task type": Registry(
            pm,
            "atasker_register_task_types",
            "task type",
            lambda r: r.name,
            providers,
            UnknownTaskTypeError,
            factory_check("executor", "executor_factory", EXECUTOR_MEMBERS),
        ),
        "queue policy": Registry(
            pm,
            "atasker_register_queue_policies",
            "queue policy",
            lambda r: r.name,
            providers,
            UnknownQueuePolicyError,
            factory_check("queue policy", "factory", QUEUE_POLICY_MEMBERS),
        ),
        "status store": Registry(
            pm,
            "atasker_register_status_stores",
            "status store",
            lambda r: r.scheme,
            providers,
            UnknownStatusStoreError,
            factory_check("status store", "factory", STATUS_STORE_MEMBERS),
        ),
        "command": Registry(pm, "atasker_register_commands", "command", lambda r: r.name, providers, LookupError),
    }
