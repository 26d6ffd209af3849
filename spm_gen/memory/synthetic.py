"""A memory bank of random images for benchmarks and tests of scale (timings do not depend on the pixels)."""

from __future__ import annotations

import torch

from ..utils.benchmarking import synthetic_images
from .bank import MemoryBank


def synthetic_bank(
    shape: tuple[int, int, int], per_class: int, classes: int = 10, embedding_dim: int | None = None
) -> MemoryBank:
    """`per_class` seeded random uint8 images of each class (labels cycling); with `embedding_dim`, seeded
    random embeddings too (for `nearest`)."""
    images, labels = synthetic_images(shape, per_class, classes)
    embeddings = None
    if embedding_dim is not None:
        embeddings = torch.randn(len(images), embedding_dim, generator=torch.Generator().manual_seed(1))
    return MemoryBank.from_images(images, labels, embeddings=embeddings)
