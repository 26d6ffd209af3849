"""The report's pictures: per-class sample grids of every model, and galleries of removed images next
to their nearest generations before and after the removal."""

from __future__ import annotations

import os

import torch

from ..metrics.memorization import rms_distances
from ..utils.images import save_titled_rows
from .generations import Generations
from .measures import RemovedData


def save_class_grids(models: list[Generations], num_classes: int, folder: str, per_class: int = 10) -> list[str]:
    """`folder/class_<c>.png` for every class: one titled row of `per_class` samples per model."""
    paths = []
    for label in range(num_classes):
        rows = {}
        for gen in models:
            images = gen.of_classes({label})[:per_class]
            if len(images):
                rows[gen.name] = images
        if rows:
            path = os.path.join(folder, f"class_{label}.png")
            paths.append(save_titled_rows(rows, path, title=f"class {label}: the same seeds before and after"))
    return paths


def gallery_indices(removed: RemovedData, count: int) -> list[int]:
    """Up to `count` removed images to show: the individually removed ones first, then some of each class."""
    in_class = [i for i, label in enumerate(removed.labels.tolist()) if label in removed.classes]
    single = [i for i in range(len(removed.ids)) if i not in set(in_class)]
    return (single + in_class)[:count]


def save_removed_gallery(
    removed: RemovedData, before: Generations, after: Generations, path: str, k: int = 6, count: int = 6
) -> str:
    """For each of `count` removed images, two rows: the image then its `k` nearest generations, before and
    after the removal, titled with the distance to the nearest."""
    rows = {}
    for i in gallery_indices(removed, count):
        name = f"id {removed.ids[i]} (class {int(removed.labels[i])})"
        for gen in (before, after):
            target = removed.images[i : i + 1].to(gen.images.dtype)
            d = rms_distances(target, gen.images)[0]
            order = d.argsort()[:k]
            title = f"{name} | {gen.name}: nearest {float(d[order[0]]):.3f}"
            rows[title] = torch.cat([target, torch.ones_like(target), gen.images[order]])  # a white gap after it
    return save_titled_rows(rows, path, title="Removed images (first column) and their nearest generations")
