"""MemoryFeatureCache: what a model computes from each memory item (the unet's memory tokens, the
classifier's embeddings), computed once and kept in step with the bank.

Features are keyed by the item's content: (sha256 of its image, label). A bank change therefore never
serves a removed or replaced item's features, and duplicated items share one entry. The cache follows the
bank through its change log (`MemoryBank.changes_since`): each addition or removal is absorbed in time
proportional to the change, and the features of content no longer in the bank are dropped from memory.
A bank the cache has not followed (another bank, a log that does not reach back) is rescanned once. The
model is identified by `weights_key` (object, device, dtype, every parameter's storage and in-place
version), so an optimizer step, `load_state_dict` or `.to()` empties the cache. Features are always computed
in eval mode (no dropout, running batch-norm statistics), whatever mode the model is in, so the cache holds
one kind of features and a model in training mode samples deterministically.

Items are encoded in canonical (key) order in batches of exactly `batch_size` (the last one padded), so an
item's features do not depend on which other items are encoded with it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..utils.modes import eval_mode
from ..utils.progress import progress
from ..utils.weights_key import weights_key
from .changes import ContentKey


class MemoryEncoder(Protocol):
    """A model that computes features of memory images (float `(M, C, H, W)` in [0, 1]) and their labels."""

    def encode_memory(self, images: torch.Tensor, labels: torch.Tensor, timestep=None) -> torch.Tensor: ...

    def parameters(self): ...

    def train(self, mode: bool = True): ...


@dataclass
class CacheSync:
    """How the last `sync` followed the bank: a rescan (`full`), or the items added (ids) and removed (keys,
    with their cached features when there were any)."""

    full: bool
    added_ids: list[str] = field(default_factory=list)
    removed: list[tuple[ContentKey, torch.Tensor | None]] = field(default_factory=list)


class MemoryFeatureCache:
    """Features of memory-bank items, keyed by content (see module docstring).

    Args:
        batch_size: items per encoding batch.
        show_progress: show a progress bar while encoding.
    """

    def __init__(self, batch_size: int = 64, show_progress: bool = False) -> None:
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._features: dict[ContentKey, torch.Tensor] = {}
        self._refs: Counter[ContentKey] = Counter()
        self._weights: tuple | None = None
        self._version: str | None = None
        self.last_sync = "none"  # "incremental" or "full": how the last bank change was absorbed

    def __len__(self) -> int:
        return len(self._features)

    @property
    def version(self) -> str | None:
        """The bank version the cache last followed (None before the first sync)."""
        return self._version

    def clear(self) -> None:
        self._features.clear()
        self._weights = self._version = None

    def sync(self, bank, model: MemoryEncoder) -> CacheSync:
        """Brings the cache in step with `bank` and `model`'s weights; returns what changed."""
        key = weights_key(model)
        same_weights = key == self._weights
        changes = bank.changes_since(self._version) if same_weights and self._version is not None else None
        self._weights, self._version = key, bank.version
        if changes is None:
            self._refs = Counter(zip(bank.hashes, bank.labels.tolist()))
            kept = self._features if same_weights else {}
            self._features = {k: v for k, v in kept.items() if k in self._refs}
            self.last_sync = "full"
            return CacheSync(full=True)
        result = CacheSync(full=False)
        for change in changes:
            self._refs.update(change.added)
            result.added_ids.extend(change.added_ids)
            for content in change.removed:
                result.removed.append((content, self._features.get(content)))
                self._refs[content] -= 1
                if self._refs[content] <= 0:
                    del self._refs[content]
                    self._features.pop(content, None)
        if changes:
            self.last_sync = "incremental"
        return result

    def features(
        self, bank, ids: Sequence[str], model: MemoryEncoder, timestep: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """Features of bank items `ids`, in that order. With a `timestep` (the paper's memory encoding at
        sampling time) they are encoded for that step and not cached."""
        keys = list(zip(bank.get_hashes(ids), bank.get_labels(ids).tolist()))
        if timestep is not None:
            return self._encode(bank, model, list(ids), keys, timestep)
        self.sync(bank, model)
        missing = sorted({k: item_id for k, item_id in zip(keys, ids) if k not in self._features}.items())
        if missing:
            new_keys = [k for k, _ in missing]
            encoded = self._encode(bank, model, [item_id for _, item_id in missing], new_keys, None)
            self._features.update(zip(new_keys, encoded))
        return torch.stack([self._features[k] for k in keys])

    def _encode(
        self,
        bank,
        model: MemoryEncoder,
        ids: list[str],
        keys: list[ContentKey],
        timestep: torch.Tensor | int | None,
    ) -> torch.Tensor:
        """Encodes items in canonical (key) order, in padded batches of exactly `batch_size`."""
        order = sorted(range(len(ids)), key=lambda i: keys[i])
        device = next(model.parameters()).device
        size, outputs = self.batch_size, []
        with eval_mode(model):  # features for sampling and prediction never see dropout or batch statistics
            for start in progress(range(0, len(order), size), "encoding memory", disable=not self.show_progress):
                chunk = order[start : start + size]
                images = bank.get_images([ids[i] for i in chunk]).to(device)
                labels = torch.tensor([keys[i][1] for i in chunk], device=device)
                pad = size - len(chunk)
                if pad:
                    images = torch.cat([images, images.new_zeros((pad, *images.shape[1:]))])
                    labels = torch.cat([labels, labels.new_zeros(pad)])
                outputs.append(model.encode_memory(images, labels, timestep)[: len(chunk)])
        encoded = torch.cat(outputs)
        result = torch.empty_like(encoded)
        result[torch.tensor(order, device=encoded.device)] = encoded
        return result
