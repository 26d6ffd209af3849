"""Seconds per optimisation step of a training config on synthetic data: what benchmarks compare (the
twin against the SPM, eager against compiled fusion, fp32 against bf16)."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from ..data import ImageDataset
from ..models.unet_spm import SPMUNet2DModel
from ..utils.benchmarking import synthetic_images, timed
from .config import TrainConfig
from .data import TrainingSet
from .loop import Optimization
from .run import TrainingRun


def synthetic_run(config: TrainConfig, accelerator: Accelerator, unet: SPMUNet2DModel) -> TrainingRun:
    """A `TrainingRun` of `config` over `config.memory_per_batch` seeded synthetic images of `unet`'s shape
    (timings and float comparisons do not depend on the pixels)."""
    cfg = unet.config
    images, labels = synthetic_images((cfg.in_channels, cfg.sample_size, cfg.sample_size), config.memory_per_batch)
    dataset = ImageDataset(images, labels, [str(i) for i in range(len(labels))])
    training_set = TrainingSet(dataset, torch.ones(len(dataset), dtype=torch.bool))
    return TrainingRun(config, accelerator, training_set, cfg.num_class_embeds, unet.uses_memory)


def training_step_seconds(config: TrainConfig, device: torch.device, steps: int, warmup: int) -> tuple[float, float]:
    """Seconds per optimisation step of a `TrainConfig` (the training loop's own `Optimization.step`, after
    `warmup` steps that include any compilation) on `config.memory_per_batch` synthetic images, and the peak
    MB. A fresh accelerator (its precision from the config); the seed is fixed, so two configs that differ
    in one setting see the same batches."""
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=device.type == "cpu")
        torch.manual_seed(0)
        unet = SPMUNet2DModel(**config.model)
        run = synthetic_run(config, accelerator, unet)
        optimization = Optimization.prepare(config, unet, accelerator)
        for step in range(warmup):
            optimization.step(run, *run.generators(step))

        def measured() -> None:
            for step in range(warmup, warmup + steps):
                optimization.step(run, *run.generators(step))

        seconds, peak, _ = timed(device, measured)
        return seconds / steps, peak
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)  # leave no precision state to the caller
