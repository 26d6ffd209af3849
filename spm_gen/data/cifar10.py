"""CIFAR-10 from a local copy in torchvision's format (never downloaded)."""

from __future__ import annotations

import os

import torch

from .dataset import ImageDataset


def load_cifar10(root: str, train: bool = True) -> ImageDataset:
    """Loads CIFAR-10 from `root/cifar-10-batches-py` (the extracted `cifar-10-python.tar.gz`).

    torchvision checks every batch file's md5 against the official release before reading it, so only the
    genuine files are ever unpickled. Ids are `"train-<i>"` / `"test-<i>"`.

    Raises:
        FileNotFoundError: the files are missing or do not match the official release.
    """
    from torchvision.datasets import CIFAR10

    try:
        data = CIFAR10(root=root, train=train, download=False)
    except RuntimeError as e:
        raise FileNotFoundError(
            f"CIFAR-10 not found (or corrupted) under '{root}': nothing is downloaded at run time. Place the "
            f"extracted 'cifar-10-python.tar.gz' so that '{os.path.join(root, 'cifar-10-batches-py')}' holds "
            "data_batch_1 .. data_batch_5, test_batch and batches.meta."
        ) from e
    images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()
    prefix = "train" if train else "test"
    ids = [f"{prefix}-{i}" for i in range(len(images))]
    return ImageDataset(images, torch.tensor(data.targets), ids, list(data.classes))
