"""Pieces the benchmark scripts share: timing with the device synchronised, synthetic memory and data."""

from __future__ import annotations

import time

import torch

from .resources import peak_mb, reset_peak


def timed(device: torch.device, fn, *args, **kwargs) -> tuple[float, float, object]:
    """`(seconds, peak MB, result)` of `fn(*args, **kwargs)`; CUDA work is waited for before the clock stops."""
    start_mem = reset_peak(device)
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, peak_mb(device, start_mem), result


def synthetic_images(
    shape: tuple[int, int, int], per_class: int, classes: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` random uint8 images of each class (labels cycling), seeded."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (per_class * classes, *shape), generator=g, dtype=torch.uint8)
    return images, torch.arange(per_class * classes) % classes


def synthetic_bank(shape: tuple[int, int, int], per_class: int, classes: int = 10):
    """A memory bank of `synthetic_images` (timings do not depend on the pixels)."""
    from ..memory.bank import MemoryBank

    return MemoryBank.from_images(*synthetic_images(shape, per_class, classes))


def training_step_seconds(config, device: torch.device, steps: int, warmup: int) -> tuple[float, float]:
    """Seconds per optimisation step of a `TrainConfig` (the training loop's own `Optimization.step`, after
    `warmup` steps that include any compilation) on `config.memory_per_batch` synthetic images, and the peak
    MB. A fresh accelerator (its precision from the config); the seed is fixed, so two configs that differ
    in one setting see the same batches."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from ..data import ImageDataset
    from ..models.unet_spm import SPMUNet2DModel
    from ..training.data import TrainingSet
    from ..training.loop import Optimization
    from ..training.run import TrainingRun

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=device.type == "cpu")
        torch.manual_seed(0)
        unet = SPMUNet2DModel(**config.model)
        cfg = unet.config
        images, labels = synthetic_images((cfg.in_channels, cfg.sample_size, cfg.sample_size), config.memory_per_batch)
        dataset = ImageDataset(images, labels, [str(i) for i in range(len(labels))])
        training_set = TrainingSet(dataset, torch.ones(len(dataset), dtype=torch.bool))
        run = TrainingRun(config, accelerator, training_set, cfg.num_class_embeds, unet.uses_memory)
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
