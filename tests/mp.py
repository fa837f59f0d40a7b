"""Process task functions for the tests and the seed's examples (``tests.mp.test``).

They live in an importable module, not in the test files, so that every start
method (``spawn`` re-imports them by name in the worker) finds them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from typing import Any


def test(*args: Any, **kwargs: Any) -> int:
    """The seed's example task: print what it got, return 999."""
    print(f"test mp method {args} {kwargs}")
    return 999


def test_mp(a: int, x: int, **kwargs: Any) -> int:
    """Add two numbers (the original atasker's second example)."""
    return a + x


def square(x: int) -> int:
    """``x * x``."""
    return x * x


def add(a: int, b: int = 0) -> int:
    """``a + b``."""
    return a + b


def pid() -> int:
    """The worker's process id."""
    return os.getpid()


def set_env(name: str, value: str) -> None:
    """Set an environment variable (a worker initializer)."""
    os.environ[name] = value


def getenv_and_pid(name: str) -> tuple[str | None, int]:
    """An environment variable of the worker, and its pid."""
    return os.environ.get(name), os.getpid()


def echo_task_id(_task_id: int | None = None) -> int | None:
    """Return the ``_task_id`` the pool passed."""
    return _task_id


def kwargs_of(**kwargs: Any) -> dict[str, Any]:
    """Return the keyword arguments received."""
    return kwargs


def no_task_id(a: int) -> int:
    """Accepts neither ``_task_id`` nor ``**kwargs``."""
    return a


def raise_value_error(message: str) -> None:
    """Raise ``ValueError(message)``."""
    raise ValueError(message)


class CustomError(Exception):
    """An exception whose constructor takes two arguments (pickles through ``args``)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text


class UnpicklableError(Exception):
    """Pickles, but cannot be unpickled: ``__init__`` needs a keyword-only argument."""

    def __init__(self, *, code: int) -> None:
        super().__init__(f"code {code}")


def raise_custom(code: int) -> None:
    """Raise :class:`CustomError`."""
    raise CustomError(code, "custom failure")


def raise_unpicklable() -> None:
    """Raise :class:`UnpicklableError`."""
    raise UnpicklableError(code=7)


def exit_now(code: int = 3) -> None:
    """Die at once: ``os._exit(code)``."""
    os._exit(code)


def kill_self() -> None:
    """Die by SIGKILL."""
    os.kill(os.getpid(), signal.SIGKILL)


def segfault() -> None:
    """Crash the interpreter: read address 0."""
    ctypes.string_at(0)


def return_lock() -> Any:
    """Return something that cannot be pickled."""
    return threading.Lock()


def wait_for(event: Any, timeout: float = 30.0) -> bool:
    """Block until a multiprocessing Event is set."""
    return event.wait(timeout)


def signal_and_wait(started: Any, release: Any, value: Any = None, timeout: float = 30.0) -> Any:
    """Set *started*, then block until *release* is set; return *value*."""
    started.set()
    release.wait(timeout)
    return value


def signal_and_sleep(started: Any, seconds: float) -> None:
    """Set *started*, then sleep (a task to time out or cancel)."""
    started.set()
    time.sleep(seconds)


def put_pid_and_wait(queue: Any, release: Any, timeout: float = 30.0) -> int:
    """Put our pid on *queue*, wait for *release*, return the pid."""
    queue.put(os.getpid())
    release.wait(timeout)
    return os.getpid()


def record(path: str, value: Any) -> Any:
    """Append *value* to the file at *path* (one line per call); return it."""
    with open(path, "a") as f:
        f.write(f"{value}\n")
    return value


async def async_double(x: int) -> int:
    """An ``async def`` task function."""
    return 2 * x


def big(n: int) -> bytes:
    """Return *n* bytes."""
    return b"x" * n


def sys_exit(code: int) -> None:
    """Raise ``SystemExit(code)`` (the worker must survive it)."""
    raise SystemExit(code)


def call(func: Any, *args: Any) -> Any:
    """Call *func* (a lambda or closure sent as an argument)."""
    return func(*args)


def make_multiplier(n: int) -> Any:
    """Return a closure (pickled back by value)."""

    def multiply(x: int) -> int:
        return x * n

    return multiply


def fork_and_return(value: Any) -> Any:
    """Fork; the child returns ``"from the forked child"`` into the worker loop, the task *value*."""
    if os.fork() == 0:
        return "from the forked child"
    return value


def sleep_if_exists(path: str, seconds: float = 5.0) -> None:
    """An initializer that is slow only once *path* exists (a worker still starting)."""
    if os.path.exists(path):
        time.sleep(seconds)  # sleep-ok: the worker's own slow start-up


def size_of(data: bytes) -> int:
    """``len(data)``."""
    return len(data)


def wait_then_exit(event: Any, code: int = 3) -> None:
    """Block until *event* is set, then die: ``os._exit(code)``."""
    event.wait(30)
    os._exit(code)
