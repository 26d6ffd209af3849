"""Forget sets of the parametric baselines: which training items an unlearning experiment forgets (a
whole class, or a seeded random fraction). Not to be confused with `spm_gen.memory.deletion`, which deletes
items from an SPM's memory."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import ImageDataset


@dataclass(frozen=True)
class ForgetSet:
    """`forget_class` (a whole class) or `fraction` (a seeded random share of all items); exactly one."""

    forget_class: int | None = None
    fraction: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.forget_class is None) == (self.fraction is None):
            raise ValueError("a ForgetSet needs exactly one of forget_class= and fraction=")
        if self.fraction is not None and not 0 < self.fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {self.fraction}")

    @property
    def name(self) -> str:
        return f"class {self.forget_class}" if self.forget_class is not None else f"random {self.fraction:.0%}"


def forget_ids(dataset: ImageDataset, request: ForgetSet) -> list[str]:
    """The ids of `dataset` that `request` asks to forget (dataset order)."""
    if request.forget_class is not None:
        if request.forget_class not in set(dataset.labels.tolist()):
            raise ValueError(f"class {request.forget_class} is not in the dataset")
        return [i for i, lab in zip(dataset.ids, dataset.labels.tolist()) if lab == request.forget_class]
    count = round(len(dataset) * request.fraction)
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(request.seed))[:count]
    return [dataset.ids[i] for i in sorted(chosen.tolist())]
