"""Built-in plugins: each one is an ordinary plugin and can be blocked by name.

* ``atasker.builtin.thread`` -- task type ``"thread"`` (TT_THREAD);
* ``atasker.builtin.policy`` -- queue policy ``"priority"`` (the default);
* ``atasker.builtin.memory_store`` -- status store ``"memory"`` (the default).
"""
