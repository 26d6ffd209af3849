"""Removal receipts: what was deleted from a memory bank, when and why (ids and hashes, never pixels)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
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
