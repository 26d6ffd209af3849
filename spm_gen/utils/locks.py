"""Advisory file locks (`flock`): released by the kernel when the holder exits, even on kill -9."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

LOCK_NAME = ".spm-gen.lock"


class LockBusy(TimeoutError):
    """The lock was held by another process for longer than the caller was willing to wait."""


@contextmanager
def folder_lock(folder: str, timeout: float) -> Iterator[None]:
    """Holds an exclusive lock on `<folder>/.spm-gen.lock` for the block. Waits up to `timeout` seconds
    (0: one try) for another holder, then raises `LockBusy`."""
    with open(os.path.join(folder, LOCK_NAME), "a") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy(folder) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def is_abandoned(folder: str) -> bool:
    """True when `folder` carries a lock file that nobody holds (its writer is gone)."""
    if not os.path.isfile(os.path.join(folder, LOCK_NAME)):
        return False
    try:
        with folder_lock(folder, timeout=0):
            return True
    except (LockBusy, OSError):
        return False
