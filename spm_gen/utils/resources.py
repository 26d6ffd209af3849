"""Peak memory of a piece of work, for benchmarks: resident memory on Linux CPUs, allocated memory on CUDA."""

from __future__ import annotations

import math

import torch


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field))


def reset_peak(device: torch.device) -> float:
    """Starts a peak measurement; returns the baseline (MB) to pass to `peak_mb` (NaN where unsupported).
    On the CPU this resets the resident high-water mark through /proc/self/clear_refs (Linux)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return 0.0
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_mb("VmRSS:")
    except OSError:
        return math.nan


def peak_mb(device: torch.device, baseline: float) -> float:
    """Peak memory (MB) added since `reset_peak` returned `baseline`."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    return _status_mb("VmHWM:") - baseline if not math.isnan(baseline) else math.nan
