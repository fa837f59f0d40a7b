"""``Locker`` as the original documented it: ``.lock``, and on a timeout
``critical()`` then ``None`` from a decorated function."""

from __future__ import annotations

import threading

import pytest

from atasker import Locker, LockerTimeoutError
from tests.conftest import WAIT


def held_elsewhere(locker: Locker) -> threading.Event:
    """Hold *locker*'s lock in another thread until the returned event is set."""
    held, release = threading.Event(), threading.Event()

    def hold():
        with locker.lock:
            held.set()
            release.wait(WAIT)

    threading.Thread(target=hold, daemon=True).start()
    assert held.wait(WAIT)
    return release


def test_a_decorated_function_is_skipped_and_returns_none_after_critical():
    locker = Locker(mod="test", relative=False, timeout=0.05)
    calls, critical = [], []
    locker.critical = lambda: critical.append(True)

    @locker
    def protected():
        calls.append(True)
        return "ran"

    locker.lock.acquire()  # the original's users held .lock directly
    try:
        assert protected() is None
    finally:
        locker.lock.release()
    assert critical == [True] and calls == []
    assert protected() == "ran"


def test_with_still_raises_a_timeout_error_after_critical():
    locker = Locker(mod="test", timeout=0.05)
    critical = []
    locker.critical = lambda: critical.append(True)
    release = held_elsewhere(locker)
    with pytest.raises(TimeoutError) as caught, locker:
        pass
    release.set()
    assert isinstance(caught.value, LockerTimeoutError) and critical == [True]


def test_raise_timeout_makes_a_decorated_function_raise():
    locker = Locker(mod="strict", timeout=0.05, raise_timeout=True)
    release = held_elsewhere(locker)

    @locker
    def protected():
        return "ran"

    with pytest.raises(LockerTimeoutError, match="strict"):
        protected()
    release.set()


def test_lock_is_re_entrant_by_default_and_plain_with_relative_false():
    assert isinstance(Locker().lock, type(threading.RLock()))
    assert isinstance(Locker(relative=False).lock, type(threading.Lock()))
    assert Locker().mod == "main"  # the original's default label
