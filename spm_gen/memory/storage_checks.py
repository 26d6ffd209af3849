"""Checks on what a saved memory bank holds: every problem is a `ValueError` that starts with
"Corrupted memory bank at '<folder>'", never a traceback or a silent wrong load."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import torch

from ..utils.file_kinds import special_kind
from ..utils.messages import preview
from .items import content_hashes, nonfinite_rows
from .receipts import receipt_problem


def corrupted(directory: str, problem: str) -> ValueError:
    hint = "`spm-gen check` on the folder lists every problem"
    return ValueError(f"Corrupted memory bank at '{directory}': {problem} ({hint})")


def check_regular_file(directory: str, name: str) -> None:
    """Raises `corrupted` when `directory/name` exists but is not a regular file (following links): nothing of
    the folder is opened before this check. A missing file is left to the open that follows (its own message)."""
    kind = special_kind(os.path.join(directory, name))
    if kind:
        raise corrupted(directory, f"{name} is {kind}, not a regular file")


def parse_json(directory: str, name: str, text: str, where: str = "") -> object:
    """`json.loads(text)`, any failure (bad syntax, nesting deep enough to exhaust the parser) `corrupted`."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        problem = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise corrupted(directory, f"{name}{where} is not valid json ({problem})") from None


def items_digest(ids: list[str], labels: torch.Tensor) -> str:
    """sha256 over the ids and labels of the rows, so a flipped label or a renamed id is caught on load."""
    digest = hashlib.sha256(json.dumps(ids).encode("utf-8"))
    digest.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def embeddings_digest(embeddings: torch.Tensor) -> str:
    """sha256 over a shard's float32 embedding rows, so a zeroed or altered row is caught on a verified load."""
    return hashlib.sha256(embeddings.to(torch.float32).contiguous().numpy().tobytes()).hexdigest()


def check_embeddings(directory: str, file: str, embeddings: torch.Tensor, digest: object, verify: bool) -> None:
    """Embeddings are finite (a NaN row would make `find_similar` miss its item without a word), and with
    `verify` they match the digest their save recorded (saves before 2026-12 recorded none)."""
    if not embeddings.is_floating_point() or embeddings.ndim != 2:
        raise corrupted(directory, f"{file}: embeddings must be a 2-D float column, got {embeddings.dtype}")
    bad = nonfinite_rows(embeddings)
    if bad:
        raise corrupted(directory, f"{file}: {len(bad)} embedding row(s) are not finite (rows {bad[:5]})")
    if verify and digest is not None and digest != embeddings_digest(embeddings):
        raise corrupted(directory, f"{file}: the embeddings do not match the digest of the save (changed after saving)")


def check_ids(directory: str, ids: object, hashes: object) -> None:
    """Ids are unique strings and hashes strings."""
    if not isinstance(ids, list) or not set(map(type, ids)) <= {str} or len(set(ids)) != len(ids):
        raise corrupted(directory, "the ids are not unique strings")
    if not isinstance(hashes, list) or not set(map(type, hashes)) <= {str}:
        raise corrupted(directory, "the content hashes are not strings")


def check_labels(directory: str, ids: list[str], labels: torch.Tensor, digest: object) -> None:
    """Labels are a 1-D int64 column of non-negative values and (for saves that record it) the ids and
    labels match their digest."""
    if labels.dtype != torch.int64 or labels.ndim != 1 or (labels.numel() and int(labels.min()) < 0):
        found = f"{labels.dtype} {tuple(labels.shape)}"
        raise corrupted(directory, f"labels must be a 1-D int64 column of non-negative values, got {found}")
    if digest is not None and digest != items_digest(ids, labels):
        raise corrupted(directory, "the ids or labels do not match the digest of the save (changed after saving)")


def check_tensors(directory: str, file: str, tensors: dict[str, torch.Tensor], counts: dict[str, int]) -> None:
    """`images` (uint8) and `labels` present, and every column as long as the commit says."""
    for name in ("images", "labels"):
        if name not in tensors:
            raise corrupted(directory, f"{file} has no '{name}' tensor")
    counts = {**counts, **{name: int(t.shape[0]) if t.ndim else -1 for name, t in tensors.items()}}
    if len(set(counts.values())) != 1:
        raise corrupted(directory, f"{file}: the commit and the columns disagree on the number of items: {counts}")
    if tensors["images"].dtype != torch.uint8:
        raise corrupted(directory, f"images are {tensors['images'].dtype}, not uint8")


def verify_hashes(directory: str, ids: list[str], hashes: list[str], images: torch.Tensor) -> None:
    bad = [i for i, h, h2 in zip(ids, hashes, content_hashes(images)) if h != h2]
    if bad:
        raise corrupted(directory, f"content hash mismatch for ids {preview(bad)}")


def read_receipts(directory: str, receipts_file: str) -> list[dict]:
    """The bank's receipt log, every line checked against the receipt's schema (`receipt_problem`): a damaged
    line refuses the load, naming the line and what is wrong (the log is the record of what was deleted; a bank
    whose record cannot be trusted is not used)."""
    check_regular_file(directory, receipts_file)
    try:
        with open(os.path.join(directory, receipts_file), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise corrupted(directory, f"cannot read {receipts_file} ({e!r})") from e
    receipts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = parse_json(directory, receipts_file, line, f" line {number}")
        problem = receipt_problem(record)
        if problem:
            raise corrupted(directory, f"{receipts_file} line {number} is not a removal receipt: {problem}")
        receipts.append(record)
    return receipts


@dataclass
class ShardData:
    """The rows one saved file holds, read and checked: columns, ids and content hashes."""

    tensors: dict[str, torch.Tensor]
    ids: list[str]
    hashes: list[str]
