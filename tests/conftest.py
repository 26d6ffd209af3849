"""Shared fixtures: tiny images made on the fly, never downloaded."""

from __future__ import annotations

import pytest
import torch

from spm_gen import MemoryBank


def make_images(count: int, channels: int = 1, size: int = 8, seed: int = 0) -> torch.Tensor:
    """Distinct random images `(count, channels, size, size)`, float in [0, 1], exactly representable as uint8."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, channels, size, size), generator=g, dtype=torch.uint8).float() / 255.0


def make_labels(count: int, num_classes: int = 4) -> torch.Tensor:
    return torch.arange(count) % num_classes


@pytest.fixture
def tiny_images() -> torch.Tensor:
    return make_images(12)


@pytest.fixture
def tiny_bank() -> MemoryBank:
    """12 items, 1x8x8, labels 0..3 (three items each), ids "0".."11"."""
    return MemoryBank.from_images(make_images(12), make_labels(12))


@pytest.fixture
def rgb_images() -> torch.Tensor:
    return make_images(6, channels=3, size=16, seed=1)
