"""Removal requests against a saved model folder (an SPMDiffusionPipeline or a classifier folder): both
keep their memory in `<folder>/memory_bank`, so a removal loads, edits and saves only the bank."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field

import torch

from ..data.folders import load_image
from ..memory.bank import MemoryBank
from ..memory.items import content_hashes
from ..memory.receipts import RemovalReceipt

BANK_FOLDER = "memory_bank"


@dataclass
class RemovalRequest:
    """What to remove; several kinds may be combined."""

    ids: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    image_files: list[str] = field(default_factory=list)  # matched by content hash
    similar_files: list[str] = field(default_factory=list)  # matched by pixel distance <= threshold
    threshold: float | None = None
    reason: str = ""

    def is_empty(self) -> bool:
        return not (self.ids or self.labels or self.image_files or self.similar_files)


@dataclass
class RemovalOutcome:
    receipt: RemovalReceipt | None  # None for a dry run
    ids: list[str]
    labels: list[int]
    folder: str  # where the edited model lives (the source folder for a dry run)
    receipt_path: str | None
    seconds: float


def read_ids_file(path: str) -> list[str]:
    """Ids from a text file (one per line, blank lines and #-comments skipped) or a json list."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        return [str(i) for i in json.loads(text)]
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _load_images(paths: list[str], bank: MemoryBank, resize: bool) -> torch.Tensor:
    channels, height, width = bank.image_shape
    images = []
    for path in paths:
        if not os.path.isfile(path):
            raise ValueError(f"cannot read image '{path}': no such file")
        image = load_image(path, image_size=height if resize else None, channels=channels)
        if tuple(image.shape) != bank.image_shape:
            raise ValueError(
                f"image '{path}' has shape {tuple(image.shape)}, the memory holds {bank.image_shape}: a content-hash "
                "match needs the stored image itself (use --similar-to for near copies)"
            )
        images.append(image)
    return torch.stack(images)


def resolve(bank: MemoryBank, request: RemovalRequest) -> dict:
    """The `bank.remove` arguments for `request`; raises ValueError (bank untouched) for unknown items."""
    if request.is_empty():
        raise ValueError("nothing to remove: give ids, an ids file, a class, image files or --similar-to files")
    hashes = content_hashes(_load_images(request.image_files, bank, resize=False)) if request.image_files else []
    unknown = sorted(set(hashes) - set(bank.hashes))
    if unknown:
        names = [p for p, h in zip(request.image_files, hashes) if h in unknown]
        raise ValueError(f"no memory item has the content of {names}; nothing was changed")
    ids = list(request.ids)
    if request.similar_files:
        if request.threshold is None:
            raise ValueError("--similar-to needs --threshold (an RMS pixel distance in [0, 1])")
        found = bank.find_similar(_load_images(request.similar_files, bank, resize=True), threshold=request.threshold)
        if not found:
            raise ValueError(f"no memory item within threshold {request.threshold} of {request.similar_files}")
        ids += found
    return {"ids": ids or None, "labels": request.labels or None, "hashes": hashes or None}


def remove_from_folder(
    folder: str, request: RemovalRequest, dry_run: bool = False, output: str | None = None
) -> RemovalOutcome:
    """Removes the requested items from `<folder>/memory_bank` and saves atomically.

    In place, the bank's own save is atomic; with `output`, the whole folder is copied and edited in a
    temporary folder that is renamed to `output` when complete. The receipt is also written as json to
    `<target>/receipts/`. Unknown ids, classes or images raise ValueError and change nothing.
    """
    start = time.perf_counter()
    bank_dir = os.path.join(folder, BANK_FOLDER)
    if not os.path.isdir(bank_dir):
        raise FileNotFoundError(f"'{folder}' has no {BANK_FOLDER}/ (expected a saved pipeline or classifier folder)")
    if output is not None and os.path.exists(output):
        raise ValueError(f"--output '{output}' exists already; choose a new folder")
    bank = MemoryBank.from_pretrained(bank_dir)
    arguments = resolve(bank, request)
    if dry_run:
        ids = bank.resolve_ids(**arguments)
        return RemovalOutcome(None, ids, bank.get_labels(ids).tolist(), folder, None, time.perf_counter() - start)
    receipt = bank.remove(**arguments, reason=request.reason)
    target = folder
    if output is None:
        bank.save_pretrained(bank_dir)
    else:
        staging = os.path.join(
            os.path.dirname(os.path.abspath(output)), f".{os.path.basename(output)}.{uuid.uuid4().hex[:8]}.tmp"
        )
        try:
            shutil.copytree(folder, staging, ignore=shutil.ignore_patterns(BANK_FOLDER))
            bank.save_pretrained(os.path.join(staging, BANK_FOLDER))
            os.replace(staging, output)
        finally:
            if os.path.exists(staging):
                shutil.rmtree(staging)
        target = output
    receipt_dir = os.path.join(target, "receipts")
    os.makedirs(receipt_dir, exist_ok=True)
    receipt_path = os.path.join(
        receipt_dir, f"removal-{receipt.time_utc.replace(':', '')}-{receipt.version_after[:8]}.json"
    )
    with open(receipt_path, "w", encoding="utf-8") as f:
        json.dump(receipt.to_dict(), f, indent=2)
    return RemovalOutcome(
        receipt, receipt.removed_ids, receipt.labels, target, receipt_path, time.perf_counter() - start
    )
