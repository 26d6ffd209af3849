"""ServedModel: a saved SPM pipeline kept in step with its folder while it serves.

A removal commits to disk first (`delete_from_folder`: the folder's lock, the atomic commit, the receipt file,
exactly as `spm-gen remove`), and then reaches the live bank. Removals made by anyone else (the CLI, another
server over the same folder) reach it too: every request first compares the folder's commit record
(`memory_bank/config.json`, one `stat`) with the one last seen, and on a change applies the removals of the
commit's log that the live bank has not applied yet; a folder changed in any other way (its item count does
not match) is reloaded whole.

Consistency. The pipeline decides what a call reads, and encodes it, under the bank's lock at the start of
the call (clean memory encoding), so a generation in flight reads the bank before a removal or after it,
never a mix, and one that starts after a removal has been applied reads none of its items. With the paper's
encoding (memory read at every step) a generation holds the bank's lock throughout. Generations run one at a
time (the torch threads are shared anyway); removals do not wait for them to finish.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..memory.bank import MemoryBank
from ..memory.deletion import DeletionOutcome, DeletionRequest, delete_from_folder
from ..memory.saved_folder import SavedFolder
from ..memory.storage_checks import read_receipts

logger = logging.getLogger(__name__)

READ_ATTEMPTS = 20


@dataclass(frozen=True)
class Generation:
    images: torch.Tensor  # (B, C, H, W) in [0, 1]
    memory_ids: list[list[str]] | None
    bank_version: str


class ServedModel:
    """The pipeline saved in `folder`, and what it has applied of the folder's commits.

    Args:
        folder: a folder written by `SPMDiffusionPipeline.save_pretrained` (with memory).
        wait: seconds a removal waits for another writer's lock.
    """

    def __init__(self, folder: str, wait: float = 60.0) -> None:
        from ..sampling import load_pipeline

        self.folder = SavedFolder(folder).require_bank()
        self.wait = wait
        self.pipe = load_pipeline(folder)
        self.started = time.time()
        self._generate = threading.Lock()  # one generation at a time
        self._sync = threading.Lock()  # one refresh at a time
        self._seen: tuple | None = None  # the commit record last applied (inode, mtime, size)
        self._disk_version: str | None = None
        self._applied: set[str] = {r.version_after for r in self.pipe.memory_bank.receipts}
        self.refresh()

    @property
    def bank(self) -> MemoryBank:
        return self.pipe.memory_bank

    @property
    def disk_version(self) -> str | None:
        """The version of the folder's commit the live bank is in step with."""
        return self._disk_version

    def _commit_record(self) -> str:
        return os.path.join(self.folder.bank_dir, "config.json")

    def refresh(self) -> None:
        """Brings the live bank in step with the folder's commit (a `stat` when nothing changed)."""
        with self._sync:
            stat = os.stat(self._commit_record())
            seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if seen == self._seen:
                return
            config, receipts = self._read_commit()
            new = [r for r in receipts if r.get("version_after") not in self._applied]
            gone = sorted({i for r in new for i in r.get("removed_ids", []) if i in self.bank})
            if gone:
                self.bank.remove(ids=gone, reason="removed from the served folder")
                logger.info("applied %d removal(s) from '%s': %d item(s) gone", len(new), self.folder.path, len(gone))
            self._applied.update(r.get("version_after") for r in new)
            if config["_num_items"] != len(self.bank):  # changed otherwise than by removals: load it whole
                logger.warning("'%s' changed beyond removals: reloading its memory", self.folder.path)
                with self._generate:
                    self.pipe.memory_bank = self.folder.load_bank(verify=False)
                self._applied = {r.version_after for r in self.bank.receipts}
            self._seen, self._disk_version = seen, config["_version"]

    def _read_commit(self) -> tuple[dict, list[dict]]:
        """The commit record and its removal log, read again when a writer commits in between."""
        for attempt in range(READ_ATTEMPTS):
            try:
                with open(self._commit_record(), encoding="utf-8") as f:
                    config = json.load(f)
                return config, read_receipts(self.folder.bank_dir, config["_receipts_file"])
            except (OSError, ValueError, KeyError):
                if attempt + 1 == READ_ATTEMPTS:
                    raise
                time.sleep(0.01)
        raise AssertionError("unreachable")

    def generate(self, **pipeline_kwargs) -> Generation:
        """Samples with the pipeline (its `__call__` arguments; `output_type` is "pt"), after `refresh`."""
        self.refresh()
        paper = self.pipe.unet.config.memory_encoding == "paper"
        with self._generate, self.bank.locked() if paper else nullcontext():
            version = self._disk_version
            out = self.pipe(output_type="pt", **pipeline_kwargs)
        return Generation(out.images.cpu(), out.memory_ids, version)

    def remove(self, request: DeletionRequest, dry_run: bool = False, keep_images: bool = False) -> DeletionOutcome:
        """`spm-gen remove` on the folder (its lock, atomic commit and receipt file), then the live bank."""
        folder = self.folder.path
        outcome = delete_from_folder(folder, request, dry_run=dry_run, wait=self.wait, keep_images=keep_images)
        self.refresh()
        return outcome

    def verify(self, outcome: DeletionOutcome, samples: int, judge=None) -> dict:
        """`spm-gen remove --verify` for a removal made here: samples the live model, and writes the
        verification block into the receipt file."""
        from ..verification import VerificationSettings, attach_verification, verify_removal

        settings = VerificationSettings(samples=samples)
        with self._generate:
            block = verify_removal(self.pipe, outcome.ids, outcome.labels, outcome.removed_images, settings, judge)
        attach_verification(outcome.receipt_path, block)
        return block

    def health(self) -> dict:
        cfg = self.pipe.unet.config
        return {
            "folder": self.folder.path,
            "bank_version": self._disk_version,
            "items": len(self.bank),
            "model": {"fusion_type": cfg.fusion_type, "sample_size": cfg.sample_size, "classes": cfg.num_class_embeds},
            "uptime_s": round(time.time() - self.started, 3),
        }
