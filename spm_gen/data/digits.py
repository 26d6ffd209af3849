"""scikit-learn's bundled handwritten digits (1,797 images, 8x8, 10 classes): the offline default data."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..choices import DigitsSplit, check_choice
from .dataset import ImageDataset


def load_digits_dataset(
    image_size: int = 8, split: DigitsSplit = "all", test_fraction: float = 0.2, seed: int = 0
) -> ImageDataset:
    """Loads the digits from scikit-learn's package data (nothing is downloaded).

    Args:
        image_size: output side length; 8 is native, larger sizes are bilinear upsamplings.
        split: `"all"`, or a seeded, class-stratified `"train"` / `"test"` split.
        test_fraction: the share of each class that goes to `"test"`.
        seed: the split's seed.

    Returns:
        An `ImageDataset` of 1-channel images; ids are the positions in the full set ("0" .. "1796"),
        so they are the same in every split.
    """
    check_choice("split", split, DigitsSplit)
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = images.clamp(0, 1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    ids = [str(i) for i in range(len(labels))]
    dataset = ImageDataset(images, labels, ids, [str(c) for c in range(10)])
    if split == "all":
        return dataset
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        members = np.flatnonzero(digits.target == c)
        is_test[rng.choice(members, size=round(len(members) * test_fraction), replace=False)] = True
    return dataset.subset(torch.from_numpy(is_test if split == "test" else ~is_test))
