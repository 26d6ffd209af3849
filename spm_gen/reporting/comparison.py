"""One experiment protocol for the report, the demo and the benchmarks: sample the SPM, delete from its memory,
sample it again, unlearn the same data from the parametric twin, sample the oracles retrained without it; every
model with the same labels, seeds and `SamplingSettings` (`SamplingPlan`). Each sampled model is a `ModelRun`,
keyed by its `Role`; what is measured, tabled and drawn is the driver's (`report.py`, `memorization_regime.py`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ..data import ImageDataset
from ..memory.receipts import RemovalReceipt
from ..unlearning.twin import TwinUnlearning
from .generations import Generations, sample_generations
from .roles import Role
from .sampling_settings import SamplingSettings

logger = logging.getLogger(__name__)


@dataclass
class ModelRun:
    """One sampled model of a comparison."""

    name: str  # shown in tables and pictures, e.g. "SPM after removal"
    role: Role  # its key in the comparison
    pipe: Any
    guidance_scale: float
    generations: Generations
    seconds: float | None = None  # the deletion or unlearning that made this model from the one before

    @property
    def reads_memory(self) -> bool:
        return self.pipe.memory_bank is not None


@dataclass
class SamplingPlan:
    """How every model of a comparison is sampled: one image per entry of `labels`, the same seeds and settings
    for every model; run `role` writes its samples to `folder/<role>`."""

    labels: list[int]
    folder: str
    settings: SamplingSettings

    def run(self, name: str, role: Role, pipe, seconds: float | None = None) -> ModelRun:
        """Samples `pipe` as model `name` of a comparison, into `folder/<role>`."""
        generations = self.sample(name, pipe, os.path.join(self.folder, role))
        return ModelRun(name, role, pipe, self.settings.guidance_for(pipe), generations, seconds)

    def sample(self, name: str, pipe, folder: str) -> Generations:
        """`pipe`'s generations of `labels` by these settings, into `folder` (a model outside a comparison)."""
        kwargs = self.settings.pipeline_kwargs(pipe)
        logger.info("sampling %d images: %s (guidance %s)", len(self.labels), name, kwargs["guidance_scale"])
        return sample_generations(
            name, pipe, self.labels, folder, self.settings.seed, self.settings.batch_size, **kwargs
        )


@dataclass
class TwinBaseline:
    """The parametric twin and the unlearning methods it runs on the removed data (each a model of its own)."""

    pipe: Any
    forget: ImageDataset | None = None  # what the twin unlearns (needed with methods)
    remain: ImageDataset | None = None  # what it keeps (descent on it during unlearning)
    methods: dict[Role, TwinUnlearning] = field(default_factory=dict)  # role -> method; none: sampled only

    def __post_init__(self) -> None:
        if self.methods and (self.forget is None or self.remain is None):
            raise ValueError(f"the twin's unlearning methods {sorted(self.methods)} need its forget and remain sets")


@dataclass
class Comparison:
    """The models of one removal, in the order they are made: the SPM before, deletion from its memory (in
    place), the SPM after; the twin before and after each unlearning method; the oracles. `names` gives each
    role its shown name (the role itself when missing)."""

    spm: Any
    removal: dict[str, list]  # `MemoryBank.remove`'s selection: ids=, labels= and/or hashes=
    reason: str
    twin: TwinBaseline | None = None
    oracles: dict[Role, Any] = field(default_factory=dict)  # role -> pipeline (retrained without, or never held)
    names: dict[Role, str] = field(default_factory=dict)

    def name(self, role: Role) -> str:
        return self.names.get(role, role)


@dataclass
class ComparisonResult:
    runs: dict[Role, ModelRun]  # by role, in the order they were sampled
    receipt: RemovalReceipt  # the SPM's deletion

    def __getitem__(self, role: Role) -> ModelRun:
        return self.runs[role]

    def get(self, role: Role) -> ModelRun | None:
        return self.runs.get(role)


def run_comparison(comparison: Comparison, plan: SamplingPlan) -> ComparisonResult:
    """Samples every model of `comparison` by `plan`. The SPM's memory is edited in place (after the call
    it holds the removal)."""
    runs: dict[Role, ModelRun] = {}

    def add(role: Role, pipe, seconds: float | None = None) -> None:
        runs[role] = plan.run(comparison.name(role), role, pipe, seconds)

    add(Role.SPM_BEFORE, comparison.spm)
    receipt = comparison.spm.memory_bank.remove(**comparison.removal, reason=comparison.reason)
    logger.info("removed %d memory items in %.2f ms", len(receipt.removed_ids), 1e3 * receipt.duration_s)
    add(Role.SPM_AFTER, comparison.spm, receipt.duration_s)
    twin = comparison.twin
    if twin is not None:
        add(Role.TWIN_BEFORE, twin.pipe)
        for role, method in twin.methods.items():
            logger.info("unlearning the twin: %s, %d steps", method.title, method.steps)
            unlearned, seconds = method.apply(twin.pipe, twin.forget, twin.remain, plan.settings.seed)
            add(role, unlearned, seconds)
    for role, pipe in comparison.oracles.items():
        add(role, pipe)
    return ComparisonResult(runs, receipt)
