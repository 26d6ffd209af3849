"""Advisory file locks (`flock`): released by the kernel when the holder exits, even on kill -9.

A lock is re-entrant within a thread (a removal that holds its bank's lock saves the bank, which takes the
same lock again) and exclusive between threads and processes. `flock` alone would deadlock on the second
acquisition in one process (each `open` is its own lock owner), so the holders of this process are counted
here, by the lock file's real path.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .validation import is_finite_nonnegative

LOCK_NAME = ".spm-gen.lock"

_held: dict[str, tuple[int, int]] = {}  # real lock path -> (owning thread id, depth)
_held_guard = threading.Lock()


class LockBusy(TimeoutError):
    """The lock was held by another process for longer than the caller was willing to wait."""


def _enter_reentrant(path: str) -> bool:
    """True when this thread already holds `path` (its depth is then counted up)."""
    with _held_guard:
        owner = _held.get(path)
        if owner is not None and owner[0] == threading.get_ident():
            _held[path] = (owner[0], owner[1] + 1)
            return True
    return False


def _held_by_other_thread(path: str) -> bool:
    with _held_guard:
        owner = _held.get(path)
        return owner is not None and owner[0] != threading.get_ident()


def _held_here(path: str) -> bool:
    with _held_guard:
        return path in _held


def check_wait(seconds: object, name: str = "wait") -> None:
    """Raises ValueError unless `seconds` is a finite number >= 0 (not a bool; NaN would wait forever)."""
    if not is_finite_nonnegative(seconds):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {seconds!r}")


@contextmanager
def folder_lock(folder: str, timeout: float) -> Iterator[None]:
    """Holds an exclusive lock on `<folder>/.spm-gen.lock` for the block. Waits up to `timeout` seconds
    (0: one try) for another holder (process or thread), then raises `LockBusy`; a timeout that is not a finite
    number >= 0 (NaN would wait forever) raises ValueError naming it."""
    check_wait(timeout)
    path = os.path.realpath(os.path.join(folder, LOCK_NAME))
    if _enter_reentrant(path):
        try:
            yield
        finally:
            with _held_guard:
                thread, depth = _held[path]
                _held[path] = (thread, depth - 1)
        return
    deadline = time.monotonic() + timeout
    while _held_by_other_thread(path):
        if time.monotonic() >= deadline:
            raise LockBusy(folder)
        time.sleep(0.01)
    with open(path, "a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # excludes the other threads' opens too
                with _held_guard:
                    _held[path] = (threading.get_ident(), 1)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy(folder) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            with _held_guard:
                del _held[path]
            fcntl.flock(lock, fcntl.LOCK_UN)


def is_abandoned(folder: str) -> bool:
    """True when `folder` carries a lock file that nobody holds (its writer is gone)."""
    if not os.path.isfile(os.path.join(folder, LOCK_NAME)):
        return False
    if _held_here(os.path.realpath(os.path.join(folder, LOCK_NAME))):
        return False
    try:
        with folder_lock(folder, timeout=0):
            return True
    except (LockBusy, OSError):
        return False
