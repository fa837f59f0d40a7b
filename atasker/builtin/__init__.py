"""Built-in plugins: each one is an ordinary plugin, on the public hooks
only, and can be blocked by name (``block_plugins=[...]``).

Task types:

* ``atasker.builtin.thread`` -- ``"thread"`` (TT_THREAD), a thread pool;
* ``atasker.builtin.mp`` -- ``"mp"`` (TT_MP), a crash-proof process pool;
* ``atasker.builtin.coroutine`` -- ``"coroutine"`` (TT_COROUTINE) and aloops.

Queue policy: ``atasker.builtin.policy`` -- ``"priority"`` (the default).

Status stores: ``atasker.builtin.memory_store`` -- ``memory://`` (the
default); ``atasker.builtin.sqlite_store`` -- ``sqlite://`` and ``atasker status``.

Observers: ``atasker.builtin.trace`` -- ``start(trace=...)`` and ``atasker
plot``; ``atasker.builtin.watchdog`` -- start-time warnings.

Compatibility: ``atasker.builtin.compat`` -- the original atasker's names
(``put_task``, ``register_scheduler``, ...; see ``docs/migrating.rst``).
"""
