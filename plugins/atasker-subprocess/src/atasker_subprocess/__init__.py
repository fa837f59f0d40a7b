"""atasker task type ``"subprocess"``: command lines as background tasks.

The task function returns what to run -- a command line (split with
:func:`shlex.split`, never through a shell), an argument list, or a
:class:`Command` -- and the executor runs it as a child process:

* the result is a :class:`subprocess.CompletedProcess` with text
  ``stdout`` and ``stderr``;
* a non-zero exit fails the task with :class:`subprocess.CalledProcessError`
  (``returncode``, ``cmd``, ``stdout``, ``stderr``);
* ``timeout=`` kills the child and fails the task with
  :class:`CommandTimeoutError` (a :class:`TimeoutError`);
* ``cancel()`` of a running task kills the child; the handle ends cancelled.

Each running task has a thread that waits for its child: the pool size
(default: the number of CPUs, reserves 2 and 2) bounds both.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from atasker import BaseExecutor, Pool, SupervisorAPI, Task, TaskType, hookimpl, unblock_signals

__all__ = ["TT_SUBPROCESS", "Command", "CommandTimeoutError", "SubprocessExecutor"]

TT_SUBPROCESS = "subprocess"


@dataclass(frozen=True)
class Command:
    """What to run, when a bare argument list is not enough."""

    args: list[str] | str
    cwd: str | None = None
    env: dict[str, str] | None = None
    input: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class CommandTimeoutError(TimeoutError):
    """The child outlived the task's ``timeout=`` and was killed."""

    def __init__(self, cmd: list[str], timeout: float, stdout: str, stderr: str) -> None:
        super().__init__(f"command {shlex.join(cmd)!r} timed out after {timeout} s and was killed")
        self.cmd = cmd
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr


def _as_command(value: Any) -> Command:
    if isinstance(value, Command):
        command = value
    elif isinstance(value, (str, list, tuple)):
        command = Command(list(value) if not isinstance(value, str) else value)
    else:
        raise TypeError(
            "a subprocess task function must return a command line (str), an argument list "
            f"or atasker_subprocess.Command, got {type(value).__name__}: {value!r}"
        )
    args = shlex.split(command.args) if isinstance(command.args, str) else [str(a) for a in command.args]
    if not args:
        raise ValueError("a subprocess task function returned an empty command")
    return Command(args, command.cwd, command.env, command.input, command.extra)


class SubprocessExecutor(BaseExecutor):
    """Runs each admitted task's command as a child process.

    :class:`atasker.BaseExecutor` supplies ``validate`` (the timeout was
    checked when the task was made), ``capacity`` (``None``: threads and
    children grow on demand, the pool bounds them) and ``resize``.
    """

    def __init__(self, supervisor: SupervisorAPI, pool: Pool) -> None:
        super().__init__(supervisor, pool)
        self._lock = threading.Lock()
        self._children: dict[int, subprocess.Popen[str]] = {}
        self._cancelled: set[int] = set()
        self._threads: set[threading.Thread] = set()

    def start(self, task: Task) -> None:
        thread = threading.Thread(target=self._run, args=(task,), name=f"atasker_subprocess_{task.id}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _run(self, task: Task) -> None:
        unblock_signals()  # the child inherits this thread's mask: Ctrl-C must reach it
        try:
            try:
                # task.run(): a stop() from this task's callback does not wait for it.
                command = _as_command(task.run())
                args = list(command.args)  # _as_command made it a list
                proc = subprocess.Popen(
                    command.args,
                    cwd=command.cwd,
                    env=command.env,
                    stdin=subprocess.PIPE if command.input is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    **command.extra,
                )
            except BaseException as exc:
                self.supervisor.task_done(task, exception=exc)
                return
            with self._lock:
                self._children[task.id] = proc
                cancelled_early = task.id in self._cancelled
            if cancelled_early:
                proc.kill()
            try:
                stdout, stderr = proc.communicate(command.input, timeout=task.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
                error: BaseException | None = CommandTimeoutError(args, task.timeout or 0, stdout, stderr)
            else:
                error = None
            with self._lock:
                self._children.pop(task.id, None)
                cancelled = task.id in self._cancelled
                self._cancelled.discard(task.id)
            if cancelled:
                self.supervisor.task_done(task, cancelled=True)
            elif error is not None:
                self.supervisor.task_done(task, exception=error)
            elif proc.returncode != 0:
                self.supervisor.task_done(
                    task,
                    exception=subprocess.CalledProcessError(proc.returncode, command.args, stdout, stderr),
                )
            else:
                self.supervisor.task_done(
                    task, result=subprocess.CompletedProcess(command.args, proc.returncode, stdout, stderr)
                )
        finally:
            with self._lock:
                self._cancelled.discard(task.id)
                self._threads.discard(threading.current_thread())

    def cancel(self, task: Task) -> bool:
        with self._lock:
            self._cancelled.add(task.id)
            proc = self._children.get(task.id)
        if proc is not None:
            proc.kill()
        return True

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            children = list(self._children.values())
            threads = list(self._threads)
        if not wait:
            for proc in children:
                proc.kill()
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()


@hookimpl
def atasker_register_task_types(register: Callable[[TaskType], None]) -> None:
    """Register task type ``"subprocess"``."""
    register(
        TaskType(
            TT_SUBPROCESS,
            SubprocessExecutor,
            pool_size=lambda: os.cpu_count() or 1,
            reserve_normal=2,
            reserve_high=2,
            doc="run the command line the function returns as a child process",
        )
    )
