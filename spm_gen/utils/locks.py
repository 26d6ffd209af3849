"""Advisory file locks (`filelock`'s `flock` lock): released by the kernel when the holder exits, even on
kill -9.

A lock is re-entrant within a thread (a removal that holds its bank's lock saves the bank, which takes the
same lock again) and exclusive between threads and processes: one `FileLock` per lock file's real path
(`is_singleton`), whose holders are counted per thread (`thread_local`). What stays here: the finite-wait
check (filelock waits forever on NaN), `LockBusy` naming the folder, and `is_abandoned`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from filelock import FileLock, Timeout

from .validation import is_finite_nonnegative

LOCK_NAME = ".spm-gen.lock"


class LockBusy(TimeoutError):
    """The lock was held by another process for longer than the caller was willing to wait."""


def check_wait(seconds: object, name: str = "wait") -> None:
    """Raises ValueError unless `seconds` is a finite number >= 0 (not a bool; NaN would wait forever)."""
    if not is_finite_nonnegative(seconds):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {seconds!r}")


def _lock_of(folder: str) -> FileLock:
    """The one lock of `folder` in this process (re-entrant per thread; `flock`, never a soft lock file)."""
    return FileLock(os.path.realpath(os.path.join(folder, LOCK_NAME)), is_singleton=True, fallback_to_soft=False)


@contextmanager
def folder_lock(folder: str, timeout: float) -> Iterator[None]:
    """Holds an exclusive lock on `<folder>/.spm-gen.lock` for the block. Waits up to `timeout` seconds
    (0: one try) for another holder (process or thread), then raises `LockBusy`; a timeout that is not a finite
    number >= 0 (NaN would wait forever) raises ValueError naming it."""
    check_wait(timeout)
    lock = _lock_of(folder)
    try:
        lock.acquire(timeout=timeout, poll_interval=0.01)
    except Timeout:
        raise LockBusy(folder) from None
    try:
        yield
    finally:
        lock.release()


def is_abandoned(folder: str) -> bool:
    """True when `folder` carries a lock file that nobody holds (its writer is gone)."""
    if not os.path.isfile(os.path.join(folder, LOCK_NAME)):
        return False
    if _lock_of(folder).is_locked:  # held by this thread
        return False
    try:
        with folder_lock(folder, timeout=0):
            return True
    except (LockBusy, OSError):
        return False
