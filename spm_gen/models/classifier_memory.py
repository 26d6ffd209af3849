"""Memory embeddings of an SPMClassifier, cached per item and kept in step with the memory bank.

Each item (id, content hash) is embedded once while the classifier's weights stay the same. Per-class
embedding sums and counts (float64) give the prototypes. When the bank changed only by removals recorded
in its receipts since the last sync, the sums are updated from the receipts alone: time proportional to
the removed items, not to the bank. Any other change (additions, another bank, new weights) resyncs,
embedding only items not cached yet. Items are embedded in canonical order in batches of exactly
`batch_size`, so an item's embedding does not depend on what else is embedded with it.
"""

from __future__ import annotations

import torch

from ..memory.bank import MemoryBank
from .weights_key import weights_key

Key = tuple[str, str]  # (item id, content hash)


class ClassifierMemoryCache:
    def __init__(self, model: torch.nn.Module, batch_size: int = 256) -> None:
        self._model_ref = [model]  # a list, so the cache is not registered as a submodule
        self.batch_size = batch_size
        self.reset()

    def reset(self) -> None:
        self._weights: tuple | None = None
        self._bank_id: int | None = None
        self._version: str | None = None
        self._emb: dict[Key, torch.Tensor] = {}
        self._label: dict[Key, int] = {}
        self._sums: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None
        self.last_sync = "none"  # "incremental" or "full": how the last change was absorbed

    def __len__(self) -> int:
        return len(self._emb)

    def class_sums(self, bank: MemoryBank) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class embedding sums `(num_classes, D)` (float64) and counts `(num_classes,)`."""
        self._sync(bank)
        return self._sums, self._counts

    def embeddings(self, bank: MemoryBank) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings `(N, D)` and labels `(N,)` of every bank item, in bank order."""
        self._sync(bank)
        keys = list(zip(bank.ids, bank.hashes))
        return torch.stack([self._emb[k] for k in keys]), bank.labels.to(self._sums.device)

    def _sync(self, bank: MemoryBank) -> None:
        model = self._model_ref[0]
        key = weights_key(model)
        if key != self._weights:
            self.reset()
            self._weights = key
        if self._bank_id == id(bank) and self._version == bank.version:
            return
        chain = self._removals_since(bank) if self._bank_id == id(bank) else None
        if chain is not None:
            removed = [key for receipt in chain for key in zip(receipt.removed_ids, receipt.hashes)]
            if removed:
                labels = torch.tensor([self._label.pop(key) for key in removed], device=self._sums.device)
                embedded = torch.stack([self._emb.pop(key) for key in removed]).double()
                self._sums.index_add_(0, labels, -embedded)
                self._counts -= torch.bincount(labels, minlength=len(self._counts))
            self.last_sync = "incremental"
        else:
            self._full_sync(bank)
            self.last_sync = "full"
        self._bank_id, self._version = id(bank), bank.version

    def _removals_since(self, bank: MemoryBank) -> list | None:
        """The receipts that lead from the synced version to the bank's, or None if removals alone do not."""
        receipts = bank.receipts
        starts = [i for i, r in enumerate(receipts) if r.version_before == self._version]
        if not starts:
            return None
        chain = receipts[starts[0] :]
        for before, after in zip(chain, chain[1:]):
            if after.version_before != before.version_after:
                return None
        return chain if chain[-1].version_after == bank.version else None

    @torch.no_grad()
    def _full_sync(self, bank: MemoryBank) -> None:
        model = self._model_ref[0]
        keys = list(zip(bank.ids, bank.hashes))
        labels = dict(zip(keys, bank.labels.tolist()))
        present = set(keys)
        for stale in [k for k in self._emb if k not in present]:
            del self._emb[stale], self._label[stale]
        missing = sorted(k for k in keys if k not in self._emb)
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            images = bank.get_images([item_id for item_id, _ in chunk]).to(model.device)
            pad = self.batch_size - len(chunk)
            if pad:
                images = torch.cat([images, images.new_zeros((pad, *images.shape[1:]))])
            embedded = model.embed(images)[: len(chunk)]
            for item_key, emb in zip(chunk, embedded):
                self._emb[item_key] = emb
                self._label[item_key] = labels[item_key]
        dim = model.config.embed_dim
        device = model.device
        self._sums = torch.zeros(model.config.num_classes, dim, dtype=torch.float64, device=device)
        self._counts = torch.zeros(model.config.num_classes, dtype=torch.long, device=device)
        if keys:
            stacked = torch.stack([self._emb[k] for k in keys]).double()
            index = torch.tensor([labels[k] for k in keys], device=device)
            self._sums.index_add_(0, index, stacked)
            self._counts += torch.bincount(index, minlength=model.config.num_classes)
