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

The cache also keeps, once asked for them (`label_sums`), the per-label sums and counts of every item's
features (the classifier's prototypes): each sync updates them with the change it absorbs, so data flows one
way, from the bank's change log through the cache to its readers.
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
class LabelSums:
    """Per-label sums (float64 `(L, D)`) and counts (`(L,)`) of the features of a bank's items, with the items
    added since they were last brought up to date (id and content; summed when next asked for)."""

    sums: torch.Tensor
    counts: torch.Tensor
    pending: list[tuple[str, ContentKey]] = field(default_factory=list)

    def remove(self, content: ContentKey, feature: torch.Tensor | None) -> bool:
        """Takes one item of `content` out; False when that needs its feature and there is none."""
        pending = next((i for i, (_, key) in enumerate(self.pending) if key == content), None)
        if pending is not None:  # never summed (duplicates of one content have one feature: any of them)
            del self.pending[pending]
            return True
        if feature is None:
            return False
        self.sums[content[1]] -= feature.to(self.sums)
        self.counts[content[1]] -= 1
        return True


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
        self._sums: LabelSums | None = None  # kept in step once `label_sums` is first asked for

    def __len__(self) -> int:
        return len(self._features)

    @property
    def version(self) -> str | None:
        """The bank version the cache last followed (None before the first sync)."""
        return self._version

    def clear(self) -> None:
        self._features.clear()
        self._weights = self._version = self._sums = None

    def sync(self, bank, model: MemoryEncoder) -> None:
        """Brings the cache (and its label sums) in step with `bank` and `model`'s weights."""
        key = weights_key(model)
        same_weights = key == self._weights
        changes = bank.changes_since(self._version) if same_weights and self._version is not None else None
        self._weights, self._version = key, bank.version
        if changes is None:
            self._refs = Counter(zip(bank.hashes, bank.labels.tolist()))
            kept = self._features if same_weights else {}
            self._features = {k: v for k, v in kept.items() if k in self._refs}
            self._sums = None
            return
        for change in changes:
            self._refs.update(change.added)
            if self._sums is not None:
                self._sums.pending.extend(zip(change.added_ids, change.added))
            for content in change.removed:
                if self._sums is not None and not self._sums.remove(content, self._features.get(content)):
                    self._sums = None  # a feature never computed: summed anew when next asked for
                self._refs[content] -= 1
                if self._refs[content] <= 0:
                    del self._refs[content]
                    self._features.pop(content, None)

    def label_sums(self, bank, model: MemoryEncoder, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-label feature sums (float64, `shape` = (labels, feature size)) and counts of `bank`'s items, in
        step with the bank: after the first call, a bank change costs time proportional to the items it
        changed."""
        self.sync(bank, model)
        if self._sums is None or tuple(self._sums.sums.shape) != shape:
            device = next(model.parameters()).device
            sums = torch.zeros(shape, dtype=torch.float64, device=device)
            counts = torch.zeros(shape[0], dtype=torch.long, device=device)
            self._sums = LabelSums(sums, counts, list(zip(bank.ids, zip(bank.hashes, bank.labels.tolist()))))
        if self._sums.pending:
            ids = [item_id for item_id, _ in self._sums.pending]
            labels = torch.tensor([label for _, (_, label) in self._sums.pending], device=self._sums.sums.device)
            self._sums.sums.index_add_(0, labels, self.features(bank, ids, model).to(self._sums.sums))
            self._sums.counts += torch.bincount(labels, minlength=shape[0])
            self._sums.pending = []
        return self._sums.sums, self._sums.counts

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
