"""Verified removal: after deleting images from an SPM's memory, does the model still produce them?

Deleting from memory is exact, but a model whose weights memorized an image can go on producing it (the
memorization regime, benchmarks/RESULTS.md). `verify_removal` samples `samples` images of every class that
lost items, with fixed and recorded seeds, and for each removed image counts the generations within
`threshold` RMS of it (the report's near-copy rule) and records the nearest one's distance, beside the
distance from the removed image to the nearest image still in memory (a copy is closer to the removed image
than anything the memory still holds). With a judge classifier the same two distances are given in its
feature space. Each removed item gets a verdict for the receipt.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field

import torch

from .metrics.fid import domain_features
from .metrics.memorization import NEAR_COPY_RMS, count_within, rms_distances
from .reporting.sampling_settings import SamplingSettings
from .utils.progress import progress
from .utils.validation import check_values

logger = logging.getLogger(__name__)

RETRAIN_HINT = "retrain without it: spm-gen train --config CONFIG --exclude_ids {item} (docs/forgetting.md)"


@dataclass
class VerificationSettings(SamplingSettings):
    """Class c is sampled with torch.Generator().manual_seed(seed * 1_000_003 + c), with the pipeline's own
    guidance and memory size unless set."""

    samples: int = 64  # generations per class that lost items
    threshold: float = NEAR_COPY_RMS
    batch_size: int = field(default=64, kw_only=True)

    def check(self) -> None:
        check_values(
            self,
            {"samples": isinstance(self.samples, int) and self.samples > 0, "threshold": 0 < self.threshold <= 1},
        )
        self.check_sampling()

    def class_seed(self, label: int) -> int:
        return self.seed * 1_000_003 + int(label)


def sample_class(pipe, label: int, settings: VerificationSettings) -> torch.Tensor:
    """`samples` generations of class `label` `(N, C, H, W)` in [0, 1], seeded by `settings.class_seed`."""
    generator = torch.Generator(pipe.unet.device).manual_seed(settings.class_seed(label))
    out = []
    for start in range(0, settings.samples, settings.batch_size):
        count = min(settings.batch_size, settings.samples - start)
        images = pipe(
            class_labels=[label] * count,
            generator=generator,
            **settings.pipeline_kwargs(pipe),
            output_type="pt",
        ).images
        out.append(images.float().cpu())
    return torch.cat(out)


def verdict(item: str, near: int, samples: int, threshold: float) -> str:
    if near == 0:
        return f"not reproduced in {samples} samples"
    return (
        f"reproduced: {near} of {samples} samples within {threshold}; the weights memorized it; deleting it "
        f"from memory is not enough; {RETRAIN_HINT.format(item=item)}"
    )


def verify_removal(
    pipe,
    removed_ids: list[str],
    removed_labels: list[int],
    removed_images: torch.Tensor,
    settings: VerificationSettings,
    judge=None,
) -> dict:
    """The receipt's `verification` block for images removed from `pipe`'s memory (`pipe` after the removal).

    Args:
        removed_ids, removed_labels: the removed items.
        removed_images (`torch.Tensor` of shape `(R, C, H, W)` in [0, 1]): their images, kept in memory from
            before the removal (never written anywhere).
        judge: an `SPMClassifier` whose embeddings give the feature-space distances (optional).
    """
    settings.check()
    if pipe.memory_bank is None or not pipe.unet.uses_memory:
        raise ValueError("verification samples an SPM pipeline; this model reads no memory (a parametric twin?)")
    removed_images = removed_images.float().cpu()
    bank = pipe.memory_bank
    generated = {}
    for label in progress(sorted(set(removed_labels)), "verifying"):
        generated[label] = sample_class(pipe, label, settings)
    remaining = bank.nearest_images(removed_images, k=1).distances[:, 0].cpu() if len(bank) else None
    items = []
    for i, (item, label) in enumerate(zip(removed_ids, removed_labels)):
        d = rms_distances(removed_images[i : i + 1], generated[label])[0]
        near = int(count_within(d.flatten(), settings.threshold))
        entry = {
            "id": item,
            "label": int(label),
            "nearest_sample": float(d.min()),
            "nearest_remaining": None if remaining is None else float(remaining[i]),
            "near_copies": near,
            "samples": settings.samples,
            "reproduced": near > 0,
            "verdict": verdict(item, near, settings.samples, settings.threshold),
        }
        if judge is not None:
            entry.update(judge_distances(judge, removed_images[i : i + 1], generated[label], bank))
        items.append(entry)
    reproduced = [e["id"] for e in items if e["reproduced"]]
    logger.info("verified %d removed items: %d reproduced %s", len(items), len(reproduced), reproduced)
    return {
        "settings": {**asdict(settings), "class_seeds": {str(c): settings.class_seed(c) for c in generated}},
        "items": items,
        "reproduced": reproduced,
        "verified": not reproduced,
    }


def judge_distances(judge, image: torch.Tensor, samples: torch.Tensor, bank) -> dict:
    """Euclidean distances in the judge's embedding space from `image` to its nearest sample and to the nearest
    image still in `bank`."""
    judge = judge.eval()
    target = domain_features(judge, image).float()
    to_samples = torch.cdist(target, domain_features(judge, samples).float())[0]
    to_memory = torch.cdist(target, domain_features(judge, bank.get_images()).float())[0]
    return {"judge_nearest_sample": float(to_samples.min()), "judge_nearest_remaining": float(to_memory.min())}


def attach_verification(receipt_path: str | None, block: dict) -> None:
    """Writes `block` into the receipt file as its `verification` (atomically); nothing when there is no file."""
    if receipt_path is None:
        return
    from .utils.atomic import atomic_write_text

    with open(receipt_path, encoding="utf-8") as f:
        receipt = json.load(f)
    atomic_write_text(receipt_path, json.dumps({**receipt, "verification": block}, indent=2))
