"""The memorization regime: models trained long on a small training set copy training images. Which of
them stop producing a removed image, and what does the removal cost the rest?

Every model is sampled with the same seeds, `per_class` samples of every class, and measured against the
removed images and the remaining training images (`regime_record`):

- near_copies_of_removed: samples within `threshold` (RMS pixel distance) of some removed image;
- memorization_rate: Gu et al.'s rate against the remaining training images (nearest < 1/3 of the second);
- extraction_share: the share of samples whose Carlini et al. ratio (see `metrics.memorization`) is below
  `metrics.memorization.EXTRACTION_RATIO`;
- fid_remaining: domain FID (the judge's features) against the remaining training images.

The removed images are chosen among those the twin copies (`choose_removed`), one per class.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace

import torch

from ..memory.bank import MemoryBank
from ..metrics.fid import compute_fid, save_images
from ..metrics.memorization import (
    NEAR_COPY_RMS,
    MemorizationReport,
    count_within,
    memorization,
    near_copies,
    nearest_target_distance,
    rms_distances,
)
from ..models.classifier_spm import SPMClassifier
from ..utils.benchmarking import RunFolderOptions
from ..utils.charts import save_distance_histogram
from ..utils.dataclass_options import nested_settings, option
from ..utils.validation import check_values
from .comparison import ComparisonResult, ModelRun, SamplingPlan
from .generations import Generations
from .measures import EXTRACTION_SHARE, FID_REMAINING_IMAGES, MEMORIZATION_RATE, NEAR_COPIES_OF_REMOVED, Measure
from .pictures import save_removed_image_gallery
from .roles import Role
from .sampling_settings import SamplingSettings

logger = logging.getLogger(__name__)

# the regime's rows, in order: role -> (model, phase); the demo shows those that do not unlearn the twin
ROWS = {
    Role.TWIN_BEFORE: ("twin", "before"),
    Role.SPM_BEFORE: ("spm", "before"),
    Role.SPM_AFTER: ("spm deletion", "after"),
    Role.TWIN_SALUN: ("twin + SalUn", "after"),
    Role.TWIN_GRADIENT_ASCENT: ("twin + gradient ascent", "after"),
    Role.ORACLE_TWIN: ("oracle twin", "after"),
    Role.ORACLE_SPM: ("oracle spm", "after"),
}
TWIN_METHODS = {Role.TWIN_SALUN: "random_label", Role.TWIN_GRADIENT_ASCENT: "gradient_ascent"}  # role -> method


@dataclass
class RegimeSettings(SamplingSettings):
    """The regime's sampling (no guidance; the SPM reads its class's whole memory, 10 items per class here) and
    what it measures."""

    per_class: int = option(50, help="samples of every class, per model and phase")
    threshold: float = option(NEAR_COPY_RMS, help="near-copy RMS pixel distance")
    num_removed: int = option(5, help="removed images, one per class, among those the twin copies")
    num_inference_steps: int = option(50, help="DDIM steps", flag="--inference-steps", kw_only=True)
    guidance_scale: float = option(0.0, help="guidance w of every model", kw_only=True)
    variations: int = option(8, help="image-variation samples per removed image")

    def check(self) -> None:
        """Raises ValueError naming the first bad value."""
        check_values(
            self,
            {
                "per_class": self.per_class > 0,
                "threshold": 0 < self.threshold <= 1,
                "num_removed": self.num_removed > 0,
                "variations": self.variations > 0,
            },
        )
        self.check_sampling()


@dataclass(kw_only=True)
class RegimeOptions(RunFolderOptions):
    """The options the regime's benchmarks share (memorization_regime, complete_forgetting, content_memory):
    its training config, training steps, judge, reuse, and the regime's settings."""

    config: str = option("configs/digits_memorization.yaml", help="the regime's training config")
    steps: int | None = option(None, help="training steps per model (the config's by default)")
    judge: str | None = option("assets/digits/judge", help="the classifier whose features FID uses")
    reuse: bool = option(False, help="reuse models (and the removed ids) found in --out")
    settings: RegimeSettings = nested_settings(RegimeSettings)


REGIME_TINY = {"config": "configs/tiny.yaml", "steps": 4, "per_class": 2, "num_inference_steps": 2}  # --tiny


def sampling_plan(settings: RegimeSettings, num_classes: int, folder: str) -> SamplingPlan:
    """`per_class` samples of every class (classes in blocks), seeded by `settings.seed`; model `role`'s samples
    go to `folder/<role>`."""
    return SamplingPlan([c for c in range(num_classes) for _ in range(settings.per_class)], folder, settings)


def run_names(rows: dict[Role, tuple[str, str]]) -> dict[Role, str]:
    """The shown name of each role of a regime's rows (role -> (model, phase)): "model (phase)"."""
    return {role: f"{model} ({phase})" for role, (model, phase) in rows.items()}


def choose_removed(generations: Generations, training: MemoryBank, settings: RegimeSettings) -> dict[str, int]:
    """`num_removed` training ids, one per class, with the number of samples in `generations` (the twin's)
    within the threshold of each: every class's most copied image (ties: the one with the closest sample),
    classes in the same order. A count of 0 means the twin made no near-copy of that image."""
    distances = rms_distances(training.get_images().cpu(), generations.images)
    counts, closest = count_within(distances, settings.threshold).tolist(), distances.min(dim=1).values.tolist()
    best: dict[int, tuple[int, float, str]] = {}
    for item, label, count, near in zip(training.ids, training.labels.tolist(), counts, closest):
        key = (-count, near, item)
        if label not in best or key < best[label]:
            best[label] = key
    ranked = sorted(best.values())[: settings.num_removed]
    return {item: -negative for negative, _, item in ranked}


def remaining_bank(training: MemoryBank, removed: list[str]) -> MemoryBank:
    """A new bank of the training items without `removed`, in the same order (the memory that never held
    them)."""
    gone = set(removed)
    keep = [i for i in training.ids if i not in gone]
    images = (training.get_images(keep).cpu() * 255).round().to(torch.uint8)
    return MemoryBank.from_images(images, training.get_labels(keep), keep)


@dataclass
class Reference:
    """What every model is measured against: the removed images `(R, C, H, W)` in [0, 1], the remaining
    training images (as a bank, and as a folder for FID), and the judge whose features FID uses."""

    removed: torch.Tensor
    remaining: MemoryBank
    remaining_folder: str
    judge: SPMClassifier | None


def make_reference(training: MemoryBank, removed: list[str], judge: SPMClassifier | None, work: str) -> Reference:
    remaining = remaining_bank(training, removed)
    folder = save_images(remaining.get_images().cpu(), os.path.join(work, "remaining_training"))
    return Reference(training.get_images(removed).cpu(), remaining, folder, judge)


@dataclass
class Measured:
    """What the regime's measures read of one model's generations."""

    generations: Generations
    reference: Reference
    settings: RegimeSettings
    report: MemorizationReport  # against the remaining training images
    to_removed: torch.Tensor  # (S,) each sample's distance to its nearest removed image


def _fid_remaining(m: Measured) -> float | None:
    if m.reference.judge is None:
        return None
    return compute_fid(m.generations.folder, m.reference.remaining_folder, classifier=m.reference.judge)["fid"]


# the regime's record after its model and phase, in order: a new measure is one more entry
REGIME_MEASURES = [
    replace(NEAR_COPIES_OF_REMOVED, of=lambda m: int(count_within(m.to_removed, m.settings.threshold))),
    replace(MEMORIZATION_RATE, of=lambda m: m.report.memorization_rate),
    replace(EXTRACTION_SHARE, of=lambda m: m.report.extraction_share),
    replace(FID_REMAINING_IMAGES, of=_fid_remaining),
    Measure("nearest_removed", "nearest sample to a removed image", "RMS", of=lambda m: float(m.to_removed.min())),
    Measure("num_images", "samples", of=lambda m: len(m.generations.images)),
    Measure("sampling_s", "sampling time", "s", of=lambda m: m.generations.seconds),
]


def regime_record(model: str, phase: str, generations: Generations, reference: Reference, settings: RegimeSettings):
    """One record of the regime's json (`REGIME_MEASURES`), and each sample's distance to its nearest remaining
    training image."""
    report = memorization(generations.images, reference.remaining)
    to_removed = nearest_target_distance(reference.removed, generations.images)
    measured = Measured(generations, reference, settings, report, to_removed)
    record = {"model": model, "phase": phase, **{m.key: m.of(measured) for m in REGIME_MEASURES}}
    return record, report.nearest_distance


@dataclass
class RegimeMeasurements:
    """The models measured so far, in order: their records, samples and nearest-training distances (what the
    benchmark and the demo's memorization section both fill, one model at a time, with `add`)."""

    reference: Reference
    settings: RegimeSettings
    records: list[dict] = field(default_factory=list)
    shown: list[Generations] = field(default_factory=list)
    nearest: dict[str, torch.Tensor] = field(default_factory=dict)

    def add(self, run: ModelRun, model: str, phase: str) -> dict:
        """Measures one sampled model as row (`model`, `phase`)."""
        record, self.nearest[run.name] = regime_record(model, phase, run.generations, self.reference, self.settings)
        self.records.append(record)
        self.shown.append(run.generations)
        logger.info("%s", record)
        return record

    def add_rows(self, result: ComparisonResult | dict[Role, ModelRun], rows: dict[Role, tuple[str, str]]) -> None:
        """Measures the runs of `rows` (role -> (model, phase)), in that order."""
        for role, (model, phase) in rows.items():
            self.add(result[role], model, phase)

    def save_pictures(self, titles: list[str], folder: str) -> list[str]:
        """A gallery per removed image (titled by `titles`, in order) and the nearest-distance histogram."""
        paths = [
            save_removed_image_gallery(image, title, self.shown, os.path.join(folder, f"removed_{i}.png"))
            for i, (image, title) in enumerate(zip(self.reference.removed, titles))
        ]
        histogram = save_distance_histogram(
            self.nearest,
            os.path.join(folder, "nearest_training.png"),
            title="Each sample's nearest remaining training image",
            threshold=self.settings.threshold,
        )
        return [*paths, histogram]


def variation_samples(pipe, references: torch.Tensor, settings: RegimeSettings) -> torch.Tensor:
    """`variations` image variations of each reference `(R, C, H, W)` in [0, 1]: samples reading the
    memory items nearest to it (`memory_retrieval="nearest"`), seeded per reference. `(R * variations, C, H, W)`."""
    out = []
    for i, image in enumerate(references):
        generator = torch.Generator().manual_seed(settings.seed + i)
        result = pipe(
            reference_images=image.unsqueeze(0),
            num_images_per_prompt=settings.variations,
            memory_retrieval="nearest",
            memory_size=settings.memory_size,
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            generator=generator,
            output_type="pt",
        )
        out.append(result.images.cpu())
    return torch.cat(out)


def memory_influence(spm, training: MemoryBank, removed: list[str], settings: RegimeSettings) -> dict[str, dict]:
    """Does memory decide which training image the SPM copies? For each removed image: near-copies of it in
    `per_class` samples of its class with memory reduced to one item (`memory_retrieval="nearest"`,
    `memory_size=1`), once that item being the image itself and once another image of its class, the same
    noise both times (run before the deletion). As many copies without it as with it: the copies come from
    the weights."""
    out = {}
    for item in removed:
        label = int(training.get_labels([item])[0])
        other = next(i for i, lab in zip(training.ids, training.labels.tolist()) if lab == label and i != item)
        image = training.get_images([item]).cpu()
        counts = {}
        for name, held in (("itself", item), ("other", other)):
            samples = spm(
                reference_images=training.get_images([held]).cpu(),
                num_images_per_prompt=settings.per_class,
                memory_retrieval="nearest",
                memory_size=1,
                num_inference_steps=settings.num_inference_steps,
                guidance_scale=settings.guidance_scale,
                generator=torch.Generator().manual_seed(settings.seed),
                output_type="pt",
            ).images.cpu()
            counts[name] = int(near_copies(samples, image, settings.threshold)[0])
        out[item] = {"other_item": other, "near_copies_when_memory_holds": counts}
    return out


def nearest_variation(references: torch.Tensor, variations: torch.Tensor) -> list[float]:
    """For each reference `(R, C, H, W)`, the distance of its nearest variation (`variation_samples`'s
    output: the variations of reference i are its i-th block)."""
    blocks = variations.reshape(len(references), -1, *variations.shape[1:])
    return [float(rms_distances(ref.unsqueeze(0), block).min()) for ref, block in zip(references, blocks)]
