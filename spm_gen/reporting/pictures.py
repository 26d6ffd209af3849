"""The report's pictures: per-class sample grids of every model, and galleries of removed images next
to their nearest generations before and after the removal."""

from __future__ import annotations

import itertools
import os

import torch

from ..metrics.memorization import rms_distances
from ..utils.images import save_titled_rows
from .generations import Generations
from .report_rows import RemovedData


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
    """Up to `count` removed images to show, taken in turn from the individually removed ones and from each
    removed class, so that every kind of removal shows."""
    labels = removed.labels.tolist()
    groups = [[i for i, label in enumerate(labels) if label not in removed.classes]]
    groups += [[i for i, label in enumerate(labels) if label == c] for c in removed.classes]
    in_turn = [i for batch in itertools.zip_longest(*groups) for i in batch if i is not None]
    return in_turn[:count]


def gallery_title(removed: RemovedData, shown: list[int]) -> str:
    """What a gallery shows of the removal: how many of the removed items, of which kind."""
    labels = removed.labels.tolist()
    kinds = [f"{sum(labels[i] == c for i in shown)} of class {c}'s {labels.count(c)}" for c in removed.classes]
    single = sum(1 for label in labels if label not in removed.classes)
    if single:
        kinds.append(f"{sum(labels[i] not in removed.classes for i in shown)} of the {single} removed by id")
    return (  # two lines: one is wider than the picture
        f"{len(shown)} of the {len(removed.ids)} removed images ({', '.join(kinds)}):\n"
        "each (first column) with its nearest generations"
    )


def save_removed_gallery(
    removed: RemovedData, before: Generations, after: Generations, path: str, k: int = 6, count: int = 6
) -> str:
    """For each of `count` removed images, two rows: the image then its `k` nearest generations, before and
    after the removal, titled with the distance to the nearest and the number of generations searched."""
    rows = {}
    shown = gallery_indices(removed, count)
    for i in shown:
        name = f"id {removed.ids[i]} (class {int(removed.labels[i])})"
        for gen in (before, after):
            title, row = nearest_generations(removed.images[i], gen, k)
            rows[f"{name} | {title}"] = row
    return save_titled_rows(rows, path, title=gallery_title(removed, shown))


def save_removed_image_gallery(
    image: torch.Tensor, title: str, generations: list[Generations], path: str, k: int = 8
) -> str:
    """One removed image `(C, H, W)` and, for each model (before / after), its `k` nearest samples: one
    titled row per model."""
    rows = dict(nearest_generations(image, gen, k) for gen in generations)
    return save_titled_rows(rows, path, title=title)


def nearest_generations(image: torch.Tensor, gen: Generations, k: int) -> tuple[str, torch.Tensor]:
    """A gallery row: `image` `(C, H, W)`, a white gap, then its `k` nearest generations of `gen` by RMS
    distance; titled with the model, the nearest distance and the number of generations searched."""
    target = image.unsqueeze(0).to(gen.images.dtype)
    d = rms_distances(target, gen.images)[0]
    order = d.argsort()[:k]
    title = f"{gen.name}: nearest {float(d[order[0]]):.3f} of {len(gen.images)}"
    return title, torch.cat([target, torch.ones_like(target), gen.images[order]])
