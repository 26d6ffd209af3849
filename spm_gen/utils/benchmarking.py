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
