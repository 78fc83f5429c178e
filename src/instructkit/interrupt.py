"""Interrupt a block of Python code, in whatever thread runs it, when its time is up.

One daemon watchdog thread per process keeps the deadlines of the blocks running now. When one
passes, it raises the block's exception *inside* the thread that runs it, with CPython's
`PyThreadState_SetAsyncExc` (delivered between two bytecodes; a C call already running finishes
first). It repeats every 50 ms, up to 2 s, in case a broad `except` swallowed it, and leaves the
thread alone once the block exits: nothing is ever delivered after `deadline()` returns. Entering
and leaving a block costs a few microseconds (a lock and a set insert; the watchdog sleeps until the
earliest deadline). Without `ctypes.pythonapi` (not CPython) blocks are not interrupted.
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_REFIRE_SECONDS = 0.05
_REFIRES = 40


@dataclass(eq=False)
class _Armed:
    thread: int
    deadline: float
    exc: type[BaseException]
    active: bool = True
    fired: int = 0


def _set_async_exc(thread: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(exc) if exc else None)


class _Watchdog:
    """The process's watchdog thread and the blocks it watches."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active: set[_Armed] = set()
        self._next_wake = math.inf
        self._thread: threading.Thread | None = None

    def arm(self, entry: _Armed) -> None:
        with self._cond:
            self._active.add(entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="instructkit-interrupt", daemon=True)
                self._thread.start()
            if entry.deadline < self._next_wake:
                self._cond.notify()

    def disarm(self, entry: _Armed) -> None:
        entry.active = False
        with self._cond:
            self._active.discard(entry)
            if entry.fired:
                _set_async_exc(entry.thread, None)  # drop an interrupt not delivered yet

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for entry in list(self._active):
                    if entry.active and now >= entry.deadline:
                        _set_async_exc(entry.thread, entry.exc)
                        entry.fired += 1
                        entry.deadline = now + _REFIRE_SECONDS
                        if entry.fired >= _REFIRES:
                            self._active.discard(entry)
                self._next_wake = min((e.deadline for e in self._active), default=math.inf)
                self._cond.wait(None if self._next_wake == math.inf else self._next_wake - now)


_WATCHDOG: _Watchdog | None = _Watchdog() if hasattr(ctypes, "pythonapi") else None


def _after_fork() -> None:
    """A forked child has no watchdog thread and must not reuse the parent's lock."""
    global _WATCHDOG
    _WATCHDOG = _Watchdog() if _WATCHDOG is not None else None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


@contextmanager
def deadline(at: float, exc: type[BaseException]) -> Iterator[None]:
    """Raise `exc` (instantiated with no arguments) in this thread if the block still runs at `at`
    (a `time.monotonic()` value)."""
    watchdog = _WATCHDOG
    if watchdog is None:
        yield
        return
    entry = _Armed(threading.get_ident(), at, exc)  # made before it can fire: always disarmed below
    try:
        watchdog.arm(entry)
        yield
    finally:
        while True:
            try:
                watchdog.disarm(entry)
                break
            except exc:  # delivered while disarming: the entry is still armed, try again
                continue
