"""The numbers of one report row: what a model's generations show about the removed data.

- FID (remaining classes): generations of the classes that were not removed against the training images
  of those classes, in the judge classifier's feature space (clean-fid with a custom extractor).
- FID_O: the same generations against the oracle's (a model retrained without the removed data).
- UA: 100 x (1 - the judge's accuracy on generations of the removed class), as in the paper.
- Memorization rate: Gu et al., against the full training set (before removal).
- Near-copies: generations within `threshold` (RMS pixel distance) of some removed image.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import torch

from ..memory.bank import MemoryBank
from ..metrics.fid import compute_fid, save_images
from ..metrics.memorization import count_within, memorization, nearest_target_distance
from ..metrics.unlearning import generation_unlearning_accuracy
from ..models.classifier_spm import SPMClassifier
from .generations import Generations


@dataclass
class RemovedData:
    """What a removal took out: ids, their images `(R, C, H, W)` in [0, 1] and labels, and whole classes."""

    ids: list[str]
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[int]


@dataclass
class Judge:
    """The classifier behind UA and the FID features, with its memory (None for a parametric head)."""

    model: SPMClassifier
    bank: MemoryBank | None


def _write(images: torch.Tensor, folder: str) -> str:
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    return save_images(images, folder, prefix="img")


def fid_references(
    training: MemoryBank, removed: RemovedData, work_dir: str, oracle: Generations | None = None
) -> dict[str, str]:
    """The FID reference folders, written once per report: `"training"`, the training images of the
    remaining classes, and `"oracle"`, the oracle's generations of them (when an oracle is given)."""
    forgotten = torch.tensor(removed.classes, dtype=torch.long)
    images = training.get_images()[~torch.isin(training.labels, forgotten)].cpu()
    folders = {"training": _write(images, os.path.join(work_dir, "training_remaining"))}
    if oracle is not None:
        folders["oracle"] = _write(
            oracle.of_classes(set(removed.classes), keep=False), os.path.join(work_dir, "oracle")
        )
    return folders


def report_row(
    generations: Generations,
    training: MemoryBank,
    removed: RemovedData,
    work_dir: str,
    threshold: float,
    judge: Judge | None = None,
    references: dict[str, str] | None = None,
    seed: int = 0,
) -> tuple[dict, dict[str, torch.Tensor | None]]:
    """The report's numbers for one model's generations, and the per-sample distances that the histograms
    show (`nearest_training`, `nearest_removed`). `training` is the training set before the removal;
    `references` comes from `fid_references` (without `"oracle"` for the oracle's own row). FID and FID_O
    need a judge and their reference, UA a judge and a removed class; otherwise they are None."""
    forgotten = set(removed.classes)
    remaining = generations.of_classes(forgotten, keep=False)
    report = memorization(generations.images, training)
    to_removed = nearest_target_distance(removed.images, generations.images) if len(removed.ids) else None
    row = {
        "model": generations.name,
        "num_images": len(generations.images),
        "fid_remaining": None,
        "fid_oracle": None,
        "ua": None,
        "memorization_rate": report.memorization_rate,
        "near_copies": int(count_within(to_removed, threshold)) if to_removed is not None else 0,
        "sampling_s": generations.seconds,
    }
    if judge is not None and len(remaining) and references:
        slug = generations.name.lower().replace(" ", "_").replace("(", "").replace(")", "")
        ours = _write(remaining, os.path.join(work_dir, slug))
        for key, reference in (("fid_remaining", "training"), ("fid_oracle", "oracle")):
            if reference in references:
                row[key] = compute_fid(ours, references[reference], classifier=judge.model, seed=seed)["fid"]
    if judge is not None and forgotten:
        uas = [
            generation_unlearning_accuracy(judge.model, judge.bank, generations.of_classes({c}), c)
            for c in sorted(forgotten)
            if len(generations.of_classes({c}))
        ]
        row["ua"] = sum(uas) / len(uas) if uas else None
    distances = {"nearest_training": report.nearest_distance, "nearest_removed": to_removed}
    return row, distances
