"""ImageDataset: labelled uint8 images with stable ids, the common form of every data source."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..memory.bank import MemoryBank
from ..memory.items import as_ids, as_labels, as_uint8_images


@dataclass
class ImageDataset:
    """Images `(N, C, H, W)` uint8 with labels and unique string ids."""

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.images = as_uint8_images(self.images)
        self.labels = torch.from_numpy(as_labels(self.labels, len(self.images)))
        self.ids = as_ids(self.ids, len(self.images))
        if not self.class_names:
            self.class_names = [str(c) for c in range(int(self.labels.max()) + 1 if len(self.labels) else 0)]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, mask: torch.Tensor | np.ndarray) -> ImageDataset:
        """The items where the boolean `mask` is true, in order, with the same class names."""
        mask = torch.as_tensor(mask, dtype=torch.bool)
        keep = torch.nonzero(mask).flatten().tolist()
        return ImageDataset(self.images[mask], self.labels[mask], [self.ids[i] for i in keep], list(self.class_names))

    def first_per_class(self, count: int) -> ImageDataset:
        """The first `count` items of each class, in dataset order (a small training set)."""
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"count must be a positive integer, got {count!r}")
        seen: dict[int, int] = {}
        mask = torch.zeros(len(self.labels), dtype=torch.bool)
        for i, label in enumerate(self.labels.tolist()):
            seen[label] = seen.get(label, 0) + 1
            mask[i] = seen[label] <= count
        return self.subset(mask)

    def exclude(self, ids: Sequence[str] | None = None, classes: Sequence[int] | None = None) -> ImageDataset:
        """This dataset without the given ids and classes (e.g. for an oracle retrained without them).

        Raises:
            ValueError: an id or class that the dataset does not contain.
        """
        ids, classes = list(ids or []), [int(c) for c in classes or []]
        unknown_ids = sorted(set(ids) - set(self.ids))
        if unknown_ids:
            raise ValueError(f"exclude: unknown ids {unknown_ids[:10]}")
        unknown_classes = sorted(set(classes) - set(self.labels.tolist()))
        if unknown_classes:
            raise ValueError(f"exclude: unknown classes {unknown_classes}")
        drop = set(ids)
        mask = torch.tensor([i not in drop for i in self.ids], dtype=torch.bool)
        if classes:
            mask &= ~torch.isin(self.labels, torch.tensor(classes))
        return self.subset(mask)


def to_memory_bank(dataset: ImageDataset) -> MemoryBank:
    """A memory bank holding every item of `dataset`, with the dataset's ids and labels."""
    return MemoryBank.from_images(dataset.images, dataset.labels, dataset.ids)
