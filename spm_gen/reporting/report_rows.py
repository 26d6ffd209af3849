"""The numbers of one report row: what a model's generations show about the removed data.

- FID (remaining classes): generations of the classes that were not removed against the training images
  of those classes, in the judge classifier's feature space (clean-fid with a custom extractor).
- FID_O: the same generations against the oracle's (a model retrained without the removed data).
- UA: 100 x (1 - the judge's accuracy on generations of the removed class), as in the paper.
- Memorization rate: Gu et al., against the full training set (before removal).
- Near-copies: generations within `threshold` (RMS pixel distance) of some removed image.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass, field, replace

import torch

from ..memory.bank import MemoryBank
from ..metrics.fid import compute_fid, save_images
from ..metrics.memorization import (
    NEAR_COPY_RMS,
    MemorizationReport,
    count_within,
    memorization,
    nearest_target_distance,
)
from ..metrics.unlearning import generation_unlearning_accuracy
from ..models.classifier_spm import SPMClassifier
from .generations import Generations
from .measures import FID_ORACLE, FID_REMAINING_CLASSES, MEMORIZATION_RATE, NEAR_COPIES, UA, Measure


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


@dataclass
class RowContext:
    """What every row of one report is measured against."""

    training: MemoryBank  # the training set before the removal
    removed: RemovedData
    work_dir: str  # where each model's generations of the remaining classes are written for FID
    threshold: float = NEAR_COPY_RMS
    judge: Judge | None = None
    references: dict[str, str] = field(default_factory=dict)  # `fid_references`' (no "oracle" for the oracle)
    seed: int = 0


@dataclass
class Measured:
    """What the report's measures read of one model's generations."""

    generations: Generations
    context: RowContext
    report: MemorizationReport  # against the training set before the removal
    to_removed: torch.Tensor | None  # (S,) each sample's distance to its nearest removed image

    @functools.cached_property
    def remaining(self) -> torch.Tensor:
        """The generations of the classes that were not removed."""
        return self.generations.of_classes(set(self.context.removed.classes), keep=False)

    @functools.cached_property
    def remaining_folder(self) -> str:
        """`remaining` written once, for both FIDs."""
        slug = self.generations.name.lower().replace(" ", "_").replace("(", "").replace(")", "")
        return _write(self.remaining, os.path.join(self.context.work_dir, slug))


def _fid(reference: str):
    """FID of the remaining classes against one reference folder (`fid_references`' key) in the judge's
    features; None without a judge, the reference or such generations."""

    def of(m: Measured) -> float | None:
        context = m.context
        if context.judge is None or reference not in context.references or not len(m.remaining):
            return None
        folder = context.references[reference]
        return compute_fid(m.remaining_folder, folder, classifier=context.judge.model, seed=context.seed)["fid"]

    return of


def _ua(m: Measured) -> float | None:
    """The mean UA over the removed classes generated; None without a judge or a removed class."""
    judge = m.context.judge
    classes = [c for c in sorted(set(m.context.removed.classes)) if len(m.generations.of_classes({c}))]
    if judge is None or not classes:
        return None
    uas = [generation_unlearning_accuracy(judge.model, judge.bank, m.generations.of_classes({c}), c) for c in classes]
    return sum(uas) / len(uas)


def _near_copies(m: Measured) -> int:
    return int(count_within(m.to_removed, m.context.threshold)) if m.to_removed is not None else 0


REPORT_MEASURES = [
    Measure("num_images", "samples", of=lambda m: len(m.generations.images)),
    replace(FID_REMAINING_CLASSES, of=_fid("training")),
    replace(FID_ORACLE, of=_fid("oracle")),
    replace(UA, of=_ua),
    replace(MEMORIZATION_RATE, of=lambda m: m.report.memorization_rate),
    replace(NEAR_COPIES, of=_near_copies),
    Measure("sampling_s", "sampling time", "s", of=lambda m: m.generations.seconds),
]


def report_row(generations: Generations, context: RowContext) -> tuple[dict, dict[str, torch.Tensor | None]]:
    """The report's numbers for one model's generations (`REPORT_MEASURES`), and the per-sample distances that
    the histograms show (`nearest_training`, `nearest_removed`)."""
    removed = context.removed
    report = memorization(generations.images, context.training)
    to_removed = nearest_target_distance(removed.images, generations.images) if len(removed.ids) else None
    measured = Measured(generations, context, report, to_removed)
    row = {"model": generations.name, **{m.key: m.of(measured) for m in REPORT_MEASURES}}
    return row, {"nearest_training": report.nearest_distance, "nearest_removed": to_removed}
