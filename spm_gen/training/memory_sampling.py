"""Memory during training, as in the paper: per batch, N support images split evenly over the batch's
labels, the queries' own images excluded, and labels randomly permuted (labels are keys, not semantics)."""

from __future__ import annotations

import torch


class SupportSampler:
    """Draws support (memory) images for a batch of queries from the training set.

    Args:
        labels (`torch.Tensor` of shape `(N,)`): labels of the whole training set.
        num_classes: the label range used for the per-batch permutation.
    """

    def __init__(self, labels: torch.Tensor, num_classes: int) -> None:
        self.labels = labels.cpu()
        self.num_classes = num_classes
        self.members = {int(c): torch.nonzero(self.labels == c).flatten() for c in torch.unique(self.labels)}

    def sample(self, query_indices: torch.Tensor, num_support: int, generator: torch.Generator) -> torch.Tensor:
        """Indices of `num_support` support images (fewer when a class runs out), `num_support // L` for each
        of the batch's L labels, never one of the queries' own images."""
        query_indices = query_indices.cpu()
        batch_labels = torch.unique(self.labels[query_indices]).tolist()
        per_label = max(1, num_support // len(batch_labels))
        chosen = []
        for label in batch_labels:  # at most one iteration per class present in the batch
            pool = self.members[label]
            pool = pool[~torch.isin(pool, query_indices)]
            chosen.append(pool[torch.randperm(len(pool), generator=generator)[:per_label]])
        return torch.cat(chosen)

    def draw(
        self, batch_size: int, num_support: int | None, permute: bool, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """One training batch: `(query indices, query labels, support indices, support labels)`.

        Without `num_support` (a model that reads no memory) there is no support and no permutation;
        otherwise, with `permute`, queries and support are relabelled by the same random permutation.
        """
        idx = torch.randint(0, len(self.labels), (batch_size,), generator=generator)
        labels = self.labels[idx]
        if num_support is None:
            return idx, labels, None, None
        support = self.sample(idx, num_support, generator)
        support_labels = self.labels[support]
        if permute:
            perm = self.permutation(generator)
            labels, support_labels = perm[labels], perm[support_labels]
        return idx, labels, support, support_labels

    def permutation(self, generator: torch.Generator) -> torch.Tensor:
        """A random relabelling of the classes for one batch, applied to queries and support alike."""
        return torch.randperm(self.num_classes, generator=generator)
