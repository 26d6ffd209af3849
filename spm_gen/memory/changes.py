"""The change log of a memory bank in this process: what each modification added and removed, by content.

Caches of per-item features (`spm_gen.memory.feature_cache`) replay it to follow the bank in time
proportional to the change instead of rescanning the bank.
"""

from __future__ import annotations

from dataclasses import dataclass

ContentKey = tuple[str, int]  # (sha256 of the image's uint8 CHW bytes, label)


@dataclass(frozen=True)
class BankChange:
    """One modification: from `version_before` to `version_after`, the items added (ids and content keys)
    and the content keys of the items removed (one entry per item)."""

    version_before: str
    version_after: str
    added_ids: tuple[str, ...] = ()
    added: tuple[ContentKey, ...] = ()
    removed: tuple[ContentKey, ...] = ()


class ChangeLog:
    """The last `limit` changes of a bank, in order."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._changes: list[BankChange] = []

    def record(self, change: BankChange) -> None:
        self._changes.append(change)
        del self._changes[: -self.limit]

    def since(self, version: str, current: str) -> list[BankChange] | None:
        """The changes that lead from `version` to `current` ([] when equal); None when the log does not
        reach back to `version` (the caller then rescans)."""
        if version == current:
            return []
        starts = [i for i, c in enumerate(self._changes) if c.version_before == version]
        if not starts:
            return None
        chain = self._changes[starts[-1] :]
        if any(b.version_before != a.version_after for a, b in zip(chain, chain[1:])):
            return None
        return chain if chain[-1].version_after == current else None
