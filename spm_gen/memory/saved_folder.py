"""SavedFolder: a saved pipeline or classifier folder, as far as its memory is concerned.

Both keep their memory bank in `<folder>/memory_bank` and the receipts of removals made on the folder in
`<folder>/receipts/`. This is the one place that knows that layout: loading the bank, committing an edited
bank in place or as a new folder, and writing a receipt.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..utils.atomic import atomic_write_text
from ..utils.locks import LOCK_NAME, LockBusy, folder_lock, is_abandoned
from .bank import MemoryBank
from .receipts import RemovalReceipt


class FolderBusyError(ValueError):
    """Another process held the folder's lock for longer than we were willing to wait."""


def check_new_folder(output: str, source: str) -> None:
    """Raises ValueError unless `output` is a non-empty path outside `source` that does not exist yet and
    whose existing ancestors are folders (missing ones are created when it is written)."""
    if not isinstance(output, str) or not output.strip():
        raise ValueError(f"--output must name a new folder, got {output!r}")
    check_output_outside(source, output)
    if os.path.lexists(output):
        raise ValueError(f"--output '{output}' exists already; choose a new folder")
    parent = os.path.dirname(os.path.abspath(output))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"--output '{output}' lies under '{parent}', which is a file, not a folder")


def check_output_outside(source: str, output: str) -> None:
    """Raises ValueError when `output` is `source` or lies inside it (real paths): a copy nested in the
    input would keep data that later removals in the input never erase."""
    source_real, output_real = os.path.realpath(source), os.path.realpath(output)
    if output_real == source_real or output_real.startswith(source_real + os.sep):
        raise ValueError(f"--output '{output}' is inside the input folder '{source}'; choose a folder outside it")


_STAGING = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # `commit_copy`'s staging folders


def remove_abandoned_staging(parent: str) -> None:
    """Deletes the staging folders in `parent` whose writer is gone (killed mid-copy): each holds a whole
    memory, removed items included. A staging folder being built holds its lock and is left alone."""
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if _STAGING.match(name) and os.path.isdir(path) and is_abandoned(path):
            shutil.rmtree(path, ignore_errors=True)


def _make_writable(folder: str) -> None:
    """Adds the owner's write bit to `folder` and everything in it (not following links)."""
    for root, dirs, files in os.walk(folder):
        for path in [root] + [os.path.join(root, name) for name in dirs + files]:
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and not mode & stat.S_IWUSR:
                os.chmod(path, mode | stat.S_IWUSR)


def _rename_into_place(staging: str, output: str) -> None:
    """Renames the complete `staging` folder to `output`; ValueError when another process created `output`
    meanwhile (two removals racing to the same --output): that one stays whole, this one writes nothing. (A
    rename onto an empty folder would succeed; ours never are: each holds at least memory_bank/.)"""
    try:
        if os.path.lexists(output):
            raise FileExistsError(output)
        os.rename(staging, output)
    except OSError as e:
        if not os.path.lexists(output):
            raise
        raise ValueError(
            f"--output '{output}' was created by another process while this removal ran; nothing was written"
        ) from e


@dataclass(frozen=True)
class SavedFolder:
    """A folder written by `SPMDiffusionPipeline.save_pretrained` or `save_classifier`."""

    path: str
    bank_name: str = "memory_bank"

    @property
    def bank_dir(self) -> str:
        return os.path.join(self.path, self.bank_name)

    @property
    def has_bank(self) -> bool:
        return os.path.isdir(self.bank_dir)

    def require_bank(self) -> SavedFolder:
        """Itself, or `FileNotFoundError` when the folder holds no memory bank."""
        if not self.has_bank:
            raise FileNotFoundError(
                f"'{self.path}' has no {self.bank_name}/ (expected a saved pipeline or classifier folder)"
            )
        return self

    @contextmanager
    def locked(self, timeout: float = 60.0) -> Iterator[SavedFolder]:
        """Holds the memory bank's lock (`flock` on `<folder>/memory_bank/.spm-gen.lock`, the one lock every
        writer of the bank takes: `spm-gen remove`, `MemoryBank.save_pretrained` and so a pipeline's save)
        for a whole read-modify-commit, so that concurrent writers run one after the other instead of undoing
        each other. Waits up to `timeout` seconds for another holder, then raises `FolderBusyError`."""
        lock = folder_lock(self.require_bank().bank_dir, timeout)
        try:
            lock.__enter__()
        except LockBusy:
            raise FolderBusyError(
                f"'{self.path}' is being changed by another process (its lock is held); waited "
                f"{timeout:g} s: try again when it has finished"
            ) from None
        try:
            yield self
        finally:
            lock.__exit__(None, None, None)

    @contextmanager
    def read_locked(self, timeout: float = 60.0) -> Iterator[SavedFolder]:
        """`locked`, for work that only reads this folder (a removal written to a new folder): a folder this
        process cannot write to (read-only, or on a read-only file system) is read without the lock, as any
        reader is (the bank's load retries on a moved commit, so it sees one commit)."""
        if os.access(self.require_bank().bank_dir, os.W_OK):
            with self.locked(timeout):
                yield self
        else:
            yield self

    def load_bank(self, verify: bool = True) -> MemoryBank:
        return MemoryBank.from_pretrained(self.require_bank().bank_dir, verify=verify)

    def save_bank(self, bank: MemoryBank) -> None:
        """Commits `bank` into this folder (the bank's own save is atomic; see `spm_gen.memory.storage`)."""
        bank.save_pretrained(self.bank_dir)

    def commit_copy(self, bank: MemoryBank, output: str) -> SavedFolder:
        """A new folder `output`: this folder's files with `bank` as its memory. Built in a staging folder
        beside `output` (locked while it is built) and renamed into place when complete, so `output` is
        either absent or whole; staging folders that a killed run left beside it are deleted first."""
        self.check_copy_target(output)
        parent, name = os.path.split(os.path.abspath(output))
        os.makedirs(parent, exist_ok=True)
        remove_abandoned_staging(parent)
        staging = os.path.join(parent, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
        os.makedirs(staging)
        try:
            with folder_lock(staging, timeout=0):
                ignore = shutil.ignore_patterns(self.bank_name, LOCK_NAME)
                shutil.copytree(self.path, staging, ignore=ignore, dirs_exist_ok=True)
                _make_writable(staging)  # copytree copies modes: a read-only source gives a read-only copy
                SavedFolder(staging, self.bank_name).save_bank(bank)
                _rename_into_place(staging, output)
        finally:
            if os.path.exists(staging):
                shutil.rmtree(staging)
        return SavedFolder(output, self.bank_name)

    def check_copy_target(self, output: str) -> None:
        """Raises ValueError unless `output` names a new folder outside this one, under folders (not files)."""
        check_new_folder(output, self.path)

    @property
    def receipt_dir(self) -> str:
        return os.path.join(self.path, "receipts")

    def receipt_path(self, receipt: RemovalReceipt) -> str:
        name = f"removal-{receipt.time_utc.replace(':', '')}-{receipt.version_after[:8]}.json"
        return os.path.join(self.receipt_dir, name)

    def write_receipt(self, receipt: RemovalReceipt) -> str:
        """Writes `receipt` as json to `<folder>/receipts/` (atomically) and returns its path."""
        os.makedirs(self.receipt_dir, exist_ok=True)
        path = self.receipt_path(receipt)
        atomic_write_text(path, json.dumps(receipt.to_dict(), indent=2))
        return path

    def complete_receipts(self, bank: MemoryBank) -> list[str]:
        """Writes the receipt file of every removal in `bank`'s log that has none (a removal killed between
        its commit and its receipt file, or one made through the API) and deletes temporary files a killed
        write left in `receipts/`; returns the files written. The caller holds the lock."""
        written = [self.write_receipt(r) for r in bank.receipts if not os.path.isfile(self.receipt_path(r))]
        if os.path.isdir(self.receipt_dir):
            for name in os.listdir(self.receipt_dir):
                if name.startswith(".") and name.endswith(".tmp"):
                    os.remove(os.path.join(self.receipt_dir, name))
        return written
