"""Deleting items from a saved model's memory: what `spm-gen remove` does.

A `DeletionRequest` names items by id, class, image file (content hash) or similarity to image files; it
is resolved against the folder's bank into one typed `ItemSelection`, removed, and committed through
`SavedFolder` (in place, or as a new folder with `output`), with the receipt written beside it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field

import torch

from ..utils.images import load_image
from ..utils.locks import check_wait
from .bank import MemoryBank
from .items import ItemSelection, content_hashes
from .receipts import RemovalReceipt
from .saved_folder import SavedFolder

logger = logging.getLogger(__name__)


@dataclass
class DeletionRequest:
    """What to delete from a saved model's memory; several kinds may be combined."""

    ids: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    image_files: list[str] = field(default_factory=list)  # matched by content hash
    similar_files: list[str] = field(default_factory=list)  # matched by pixel distance <= threshold
    threshold: float | None = None
    reason: str = ""

    def is_empty(self) -> bool:
        return not (self.ids or self.labels or self.image_files or self.similar_files)

    def check(self, verify: bool = False) -> None:
        """Raises ValueError for a threshold that is not a finite number in [0, 1] or that has no use (it goes
        with --similar-to, and with `verify` as the near-copy distance)."""
        if self.threshold is None:
            return
        if not (self.similar_files or verify):
            raise ValueError("--threshold goes with --similar-to or --verify only")
        if not math.isfinite(self.threshold) or not 0 <= self.threshold <= 1:
            raise ValueError(f"--threshold must be an RMS pixel distance in [0, 1], got {self.threshold}")


@dataclass
class DeletionOutcome:
    receipt: RemovalReceipt | None  # None for a dry run
    ids: list[str]
    labels: list[int]
    folder: str  # where the edited model lives (the source folder for a dry run)
    receipt_path: str | None
    seconds: float
    removed_images: torch.Tensor | None = None  # `(R, C, H, W)` in [0, 1], only with `keep_images` (verification)


def read_ids_file(path: str) -> list[str]:
    """Ids from a json list of strings or integers (exact ids), or a UTF-8 text file: one id per line, taken
    exactly as written (only the line ending is dropped: ` 5` is the id " 5", never "5"), empty lines
    skipped, and lines that start with `#` are comments (an id that starts with # needs the json form); a
    byte-order mark is ignored. Raises ValueError naming the file when it can't be read."""
    if not os.path.isfile(path):
        raise ValueError(f"--ids-file '{path}' is not a file" + (" (it is a folder)" if os.path.isdir(path) else ""))
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read --ids-file '{path}' as UTF-8 text ({e})") from e
    if not text.lstrip().startswith("["):
        return [line for line in text.splitlines() if line and not line.startswith("#")]
    try:
        ids = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--ids-file '{path}' is not a valid json list ({e})") from e
    if any(isinstance(i, bool) or not isinstance(i, str | int) for i in ids):
        raise ValueError(f"--ids-file '{path}': a json list of ids holds strings or integers only")
    return [str(i) for i in ids]


def _load_images(paths: list[str], bank: MemoryBank, resize: bool) -> torch.Tensor:
    channels, height, _ = bank.image_shape
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


def selection_of(bank: MemoryBank, request: DeletionRequest, dry_run: bool = False) -> ItemSelection:
    """The items of `bank` that `request` names; raises ValueError (bank untouched) for unknown items. Image
    files that match nothing are an error for a removal; for a dry run they just add nothing."""
    if request.is_empty():
        raise ValueError("nothing to remove: give ids, an ids file, a class, image files or --similar-to files")
    ids = list(request.ids)
    if request.image_files:  # matched by content hash, checked here once (naming the files), removed by id
        hashes = content_hashes(_load_images(request.image_files, bank, resize=False))
        unknown = set(hashes) - set(bank.hashes)
        if unknown and not dry_run:
            names = [p for p, h in zip(request.image_files, hashes) if h in unknown]
            raise ValueError(f"no memory item has the content of {names}; nothing was changed")
        wanted = set(hashes)
        ids += [i for i, h in zip(bank.ids, bank.hashes) if h in wanted]
    if request.similar_files:
        if request.threshold is None:
            raise ValueError("--similar-to needs --threshold (an RMS pixel distance in [0, 1])")
        found = bank.find_similar(_load_images(request.similar_files, bank, resize=True), threshold=request.threshold)
        if not found and not dry_run:
            raise ValueError(f"no memory item within threshold {request.threshold} of {request.similar_files}")
        ids += found
    return ItemSelection.of(list(dict.fromkeys(ids)), request.labels)


def delete_from_folder(
    folder: str,
    request: DeletionRequest,
    dry_run: bool = False,
    output: str | None = None,
    wait: float = 60.0,
    keep_images: bool = False,
) -> DeletionOutcome:
    """Deletes the requested items from a saved folder's memory and commits atomically, holding the folder's
    lock from reading the bank to writing the receipt (a concurrent removal waits up to `wait` seconds).

    In place, the bank's own save is atomic; with `output`, the folder is copied and edited in a staging
    folder that is renamed to `output` when complete. The receipt is also written as json to
    `<target>/receipts/`. Unknown ids, classes or images raise ValueError and change nothing. With
    `keep_images`, the outcome carries the removed images (in this process's memory only) for verification.
    A dry run only reads (no lock, nothing written), and so does a removal with `output` as far as `folder`
    is concerned: both work on a read-only folder.
    """
    start = time.perf_counter()
    check_wait(wait, "--wait")
    request.check(verify=keep_images)
    source = SavedFolder(folder).require_bank()
    if dry_run:  # a reader: sees one commit (the bank's load retries on a moved commit), writes nothing
        return _delete(source, request, dry_run, output, start, keep_images)
    if output is not None:
        source.check_copy_target(output)  # before any work; commit_copy checks again under the lock
    with source.locked(wait) if output is None else source.read_locked(wait):
        return _delete(source, request, dry_run, output, start, keep_images)


def _delete(
    source: SavedFolder,
    request: DeletionRequest,
    dry_run: bool,
    output: str | None,
    start: float,
    keep_images: bool,
) -> DeletionOutcome:
    if output is None and not (request.image_files or request.similar_files):  # by id or class, in place
        bank = MemoryBank.load_for_removal(source.bank_dir, request.ids, request.labels)
    else:
        bank = source.load_bank(verify=False)  # the shards a removal rewrites are verified as they are written
    if not dry_run and output is None:
        source.complete_receipts(bank)
    already = sorted({i for r in bank.receipts for i in r.removed_ids} & set(request.ids) - set(bank.ids))
    if already and not dry_run:
        raise ValueError(f"ids {already} were already removed from '{source.path}' (its receipts/ say when)")
    selection = selection_of(bank, request, dry_run)
    if dry_run:
        ids = [] if selection.is_empty() else bank.resolve_ids(selection)
        return DeletionOutcome(None, ids, bank.get_labels(ids).tolist(), source.path, None, time.perf_counter() - start)
    images = bank.get_images(bank.resolve_ids(selection)).cpu() if keep_images else None
    receipt = bank.remove(selection, reason=request.reason)
    if output is None:
        source.save_bank(bank)
        target = source
    else:
        target = source.commit_copy(bank, output)
    try:
        receipt_path = target.write_receipt(receipt)
        if output is not None:  # in place they were completed before the removal
            target.complete_receipts(bank)  # the files of earlier removals the source lacked
    except OSError as e:  # committed: the removal stands, its receipt is in the bank's log
        logger.warning(
            "the removal is committed, but its receipt file could not be written (%s: '%s'); the receipt is in the "
            "bank's log and the next removal on this folder writes the file",
            e.strerror or e,
            e.filename or target.receipt_dir,
        )
        receipt_path = None
    seconds = time.perf_counter() - start
    return DeletionOutcome(receipt, receipt.removed_ids, receipt.labels, target.path, receipt_path, seconds, images)
