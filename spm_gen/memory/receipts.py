"""Removal receipts: what was deleted from a memory bank, when and why (ids and hashes, never pixels)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone


@dataclass(frozen=True)
class RemovalReceipt:
    """Proof of one removal from a :class:`~spm_gen.MemoryBank`.

    Args:
        removed_ids: ids of the removed items, in the order they were resolved.
        labels: the removed items' labels, aligned with `removed_ids`.
        hashes: sha256 hex digests of the removed items' uint8 CHW bytes, aligned with `removed_ids`.
        version_before: the bank version before the removal.
        version_after: the bank version after the removal.
        time_utc: ISO-8601 UTC time of the removal.
        reason: free text given by the caller.
        duration_s: wall-clock seconds the removal took.
        was_training_target: per removed id, whether the model's weights were trained to denoise it (False:
            memory-only or added after training, so no parameter saw it); None when the bank has no record.
    """

    removed_ids: list[str]
    labels: list[int]
    hashes: list[str]
    version_before: str
    version_after: str
    time_utc: str
    reason: str = ""
    duration_s: float = 0.0
    was_training_target: list[bool] | None = None

    @classmethod
    def now(
        cls,
        ids: list[str],
        labels: list[int],
        hashes: list[str],
        before: str,
        after: str,
        reason: str,
        seconds: float,
        was_training_target: list[bool] | None = None,
    ) -> RemovalReceipt:
        """A receipt stamped with the current UTC time."""
        time_utc = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        return cls(ids, labels, hashes, before, after, time_utc, reason, seconds, was_training_target)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> RemovalReceipt:
        return cls(**data)


_HASH = re.compile(r"[0-9a-f]{64}")


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def receipt_problem(record: object) -> str | None:
    """What is wrong with `record` as a receipt read from disk (None: nothing): the fields a removal writes,
    each of its type, the per-item lists aligned, hashes sha256 hex digests, numbers finite."""
    if not isinstance(record, dict):
        return f"a {type(record).__name__}, not an object"
    names = {f.name for f in fields(RemovalReceipt)}
    required = ("removed_ids", "labels", "hashes", "version_before", "version_after", "time_utc")
    missing = [name for name in required if name not in record]
    if missing:
        return f"missing {', '.join(missing)}"
    unknown = sorted(set(record) - names)
    if unknown:
        return f"unknown fields {unknown}"
    ids, labels, hashes = record["removed_ids"], record["labels"], record["hashes"]
    if not _strings(ids) or not ids:
        return "removed_ids must be a non-empty list of strings"
    if not isinstance(labels, list) or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in labels):
        return "labels must be a list of non-negative integers"
    if not _strings(hashes) or any(not _HASH.fullmatch(h) for h in hashes):
        return "hashes must be sha256 hex digests"
    if not len(ids) == len(labels) == len(hashes):
        return f"removed_ids, labels and hashes differ in length ({len(ids)}, {len(labels)}, {len(hashes)})"
    for name in ("version_before", "version_after", "time_utc", "reason"):
        if name in record and not isinstance(record[name], str):
            return f"{name} must be a string"
    duration = record.get("duration_s", 0.0)
    if isinstance(duration, bool) or not isinstance(duration, int | float) or not math.isfinite(duration):
        return "duration_s must be a finite number"
    targets = record.get("was_training_target")
    if targets is not None and (
        not isinstance(targets, list) or len(targets) != len(ids) or any(not isinstance(t, bool) for t in targets)
    ):
        return "was_training_target must be null or one boolean per removed id"
    return None
