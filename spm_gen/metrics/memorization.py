"""Memorization measures for generated samples against training (or removed) images, in pixel space.

Distances are Euclidean distances of [0, 1] images divided by sqrt(C * H * W) (root-mean-square pixel
differences), computed exactly with the memory bank's chunked nearest-neighbour search.

- Memorization rate (Gu et al. 2023): a sample is memorized when its nearest training image is closer than
  1/3 of the distance to the second nearest.
- Extraction ratio (Carlini et al. 2023): the distance to the nearest training image divided by
  0.5 x the mean distance to the 50 nearest; small values mean the sample copies one image rather than
  sitting in a dense region.
- Extraction share: the share of samples whose extraction ratio is below `EXTRACTION_RATIO`.
- Near copies: for each given image (e.g. each removed one), how many samples lie within a threshold of it
  (`NEAR_COPY_RMS` by default); the samples within it of some training image, and how many distinct images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..memory.bank import MemoryBank
from .near_copy import NEAR_COPY_RMS, rms_scale

EXTRACTION_RATIO = 1 / 3  # a sample counts as extracted below this ratio (our threshold, stated in RESULTS)


@dataclass
class MemorizationReport:
    nearest_distance: torch.Tensor  # (S,) distance of each sample to its nearest training image
    nearest_ids: list[str]  # (S,) that image's id
    memorized: torch.Tensor  # (S,) bool, Gu et al.
    extraction_ratio: torch.Tensor  # (S,), Carlini et al.

    @property
    def memorization_rate(self) -> float:
        return float(self.memorized.float().mean()) if len(self.memorized) else float("nan")

    @property
    def extraction_share(self) -> float:
        return float((self.extraction_ratio < EXTRACTION_RATIO).float().mean())

    def near_copy_samples(self, threshold: float = NEAR_COPY_RMS) -> int:
        """How many samples are within `threshold` of some training image."""
        return int(count_within(self.nearest_distance, threshold))

    def near_copied_images(self, threshold: float = NEAR_COPY_RMS) -> int:
        """How many distinct training images some sample is within `threshold` of."""
        near = (self.nearest_distance <= threshold).tolist()
        return len({item for item, is_near in zip(self.nearest_ids, near) if is_near})


def memorization(samples: torch.Tensor, training: MemoryBank, neighbours: int = 50) -> MemorizationReport:
    """Memorization measures of `samples` `(S, C, H, W)` in [0, 1] against the images in `training`."""
    if len(training) < 2:
        raise ValueError("memorization needs at least two training images")
    result = training.nearest_images(samples, k=min(neighbours, len(training)))
    d = result.distances.cpu()
    memorized = d[:, 0] < d[:, 1] / 3
    ratio = d[:, 0] / (0.5 * d.mean(dim=1)).clamp(min=1e-12)
    return MemorizationReport(d[:, 0], [ids[0] for ids in result.ids], memorized, ratio)


def rms_distances(targets: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """Exact RMS pixel distances `(T, S)` between target images `(T, C, H, W)` and samples `(S, C, H, W)`."""
    if samples.shape[1:] != targets.shape[1:]:
        raise ValueError(f"samples {tuple(samples.shape[1:])} and targets {tuple(targets.shape[1:])} differ in shape")
    scale = rms_scale(samples.shape[1:])
    d = torch.cdist(targets.flatten(1).float(), samples.flatten(1).float(), compute_mode="donot_use_mm_for_euclid_dist")
    return d / scale


def count_within(distances: torch.Tensor, threshold: float = NEAR_COPY_RMS) -> torch.Tensor:
    """The near-copy rule on distances `(..., S)`: how many of the last dimension lie within `threshold`."""
    return (distances <= threshold).sum(dim=-1)


def nearest_target_distance(targets: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """Each sample's distance `(S,)` to its nearest target image (e.g. the nearest removed image)."""
    return rms_distances(targets, samples).min(dim=0).values


def near_copies(samples: torch.Tensor, targets: torch.Tensor, threshold: float = NEAR_COPY_RMS) -> torch.Tensor:
    """For each target image `(T, C, H, W)`, the number of samples `(S, C, H, W)` within `threshold` of it."""
    return count_within(rms_distances(targets, samples), threshold)
