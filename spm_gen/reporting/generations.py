"""One model's generations for a report: sampled into a folder (split across `accelerate launch`
processes), read back as a tensor with their labels, timed."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass

import torch

from ..sampling import read_sample_folder, sample_to_folder


@dataclass
class Generations:
    name: str  # e.g. "SPM after removal"
    folder: str
    images: torch.Tensor  # (N, C, H, W) in [0, 1]
    labels: torch.Tensor  # (N,)
    seconds: float

    def of_classes(self, classes: set[int], keep: bool = True) -> torch.Tensor:
        """The images whose label is in `classes` (or, with `keep=False`, not in them)."""
        mask = torch.tensor([(int(label) in classes) == keep for label in self.labels], dtype=torch.bool)
        return self.images[mask]


def sample_generations(
    name: str,
    pipe,
    labels: list[int],
    folder: str,
    seed: int,
    batch_size: int = 64,
    **pipeline_kwargs,
) -> Generations:
    """Samples one image per entry of `labels` into a fresh `folder` and reads them back."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    start = time.perf_counter()
    sample_to_folder(pipe, labels, folder, batch_size, seed, **pipeline_kwargs)
    seconds = time.perf_counter() - start
    images, read_labels = read_sample_folder(folder, pipe.unet.config.in_channels)
    return Generations(name, folder, images, torch.tensor(read_labels), seconds)
