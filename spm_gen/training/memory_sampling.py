"""Memory during training, as in the paper: per batch, N support images split evenly over the batch's
labels, the queries' own images excluded, and labels randomly permuted (labels are keys, not semantics).

Memory-only items (the SILO / retrieval-augmented split: Min et al. 2023, Blattmann et al. 2022) are support
images but never queries: no parameter is ever trained to denoise them."""

from __future__ import annotations

import torch


class SupportSampler:
    """Draws support (memory) images for a batch of queries from the training set.

    Args:
        labels (`torch.Tensor` of shape `(N,)`): labels of the whole training set.
        num_classes: the label range used for the per-batch permutation.
        targets (`torch.Tensor` of shape `(N,)`, *optional*): which items may be queries (denoising targets);
            the others are memory-only. Default: every item.
    """

    def __init__(self, labels: torch.Tensor, num_classes: int, targets: torch.Tensor | None = None) -> None:
        self.labels = labels.cpu()
        self.num_classes = num_classes
        self.members = {int(c): torch.nonzero(self.labels == c).flatten() for c in torch.unique(self.labels)}
        self.targets = None if targets is None or bool(targets.all()) else torch.nonzero(targets.cpu()).flatten()
        if self.targets is not None and len(self.targets) == 0:
            raise ValueError("every training item is memory-only: there is nothing to train the weights on")

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
        support = torch.cat(chosen)
        if len(support) == 0:
            raise ValueError(
                f"no support images for a batch: every image of its classes {batch_labels} is one of its queries "
                "(use a larger training set or a smaller train_batch_size)"
            )
        return support

    def queries(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """`batch_size` query indices drawn uniformly (with replacement) among the denoising targets."""
        if self.targets is None:
            return torch.randint(0, len(self.labels), (batch_size,), generator=generator)
        return self.targets[torch.randint(0, len(self.targets), (batch_size,), generator=generator)]

    def draw(
        self, batch_size: int, num_support: int | None, permute: bool, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """One training batch: `(query indices, query labels, support indices, support labels)`.

        Without `num_support` (a model that reads no memory) there is no support and no permutation;
        otherwise, with `permute`, queries and support are relabelled by the same random permutation.
        """
        idx = self.queries(batch_size, generator)
        labels = self.labels[idx]
        if num_support is None:
            return idx, labels, None, None
        support = self.sample(idx, num_support, generator)
        support_labels = self.labels[support]
        if permute:
            perm = self.permutation(generator)
            labels, support_labels = perm[labels], perm[support_labels]
        return idx, labels, support, support_labels

    def draw_nearest(
        self, batch_size: int, table: torch.Tensor, permute: bool, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch under nearest-support training: `(query indices, query labels, support indices, support
        labels, (B, k) positions in the support of each query's neighbours)`, relabelled as `draw` does."""
        idx = self.queries(batch_size, generator)
        labels = self.labels[idx]
        support, groups = nearest_support(idx, table)
        support_labels = self.labels[support]
        if permute:
            perm = self.permutation(generator)
            labels, support_labels = perm[labels], perm[support_labels]
        return idx, labels, support, support_labels, groups

    def permutation(self, generator: torch.Generator) -> torch.Tensor:
        """A random relabelling of the classes for one batch, applied to queries and support alike."""
        return torch.randperm(self.num_classes, generator=generator)


def nearest_table(images: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """`(N, k)` indices of each item's `k` nearest items of its own class (pixel distance, itself excluded,
    nearest first): the support of nearest-support training (retrieval-augmented diffusion's neighbours).

    Raises:
        ValueError: a class has no more than `k` items, so some item would have fewer than `k` neighbours.
    """
    labels = labels.cpu()
    table = torch.empty((len(labels), k), dtype=torch.long)
    flat = images.cpu().flatten(1).float()
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        if len(members) <= k:
            raise ValueError(
                f"support_neighbours={k} needs more than {k} items in every class; class {label} has {len(members)}"
            )
        distances = torch.cdist(flat[members], flat[members])
        distances.fill_diagonal_(float("inf"))
        order = torch.sort(distances, dim=1, stable=True).indices[:, :k]  # ties broken by storage order
        table[members] = members[order]
    return table


def nearest_support(query_indices: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The support of a batch under nearest-support training: its queries' neighbours (`table` rows), each
    once, and `(B, k)` positions of every query's neighbours in that support."""
    rows = table[query_indices.cpu()]
    support, groups = torch.unique(rows.flatten(), return_inverse=True)
    return support, groups.reshape(rows.shape)
