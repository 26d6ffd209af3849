"""Parametric unlearning baselines on a classifier with a linear head: fine-tune on the remaining data, and
gradient ascent on the forget data (retraining from scratch is `train_classifier` with exclusions)."""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F

from ..data import ImageDataset
from ..models.classifier_spm import SPMClassifier
from ..utils.images import to_unit_range


def _batches(dataset: ImageDataset, steps: int, batch_size: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(dataset), (min(batch_size, len(dataset)),), generator=generator)
        yield to_unit_range(dataset.images[idx]), dataset.labels[idx]


def _run(
    model: SPMClassifier, data: ImageDataset, steps: int, lr: float, batch_size: int, seed: int, sign: float
) -> tuple[SPMClassifier, float]:
    if model.uses_memory:
        raise ValueError("the parametric baselines apply to a classifier with head='linear'")
    start = time.perf_counter()
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for images, labels in _batches(data, steps, batch_size, seed):
        loss = sign * F.cross_entropy(model(images.to(model.device)), labels.to(model.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
    return model.eval(), time.perf_counter() - start


def finetune(
    model: SPMClassifier, remaining: ImageDataset, steps: int, lr: float = 0.01, batch_size: int = 64, seed: int = 0
) -> tuple[SPMClassifier, float]:
    """Fine-tunes a copy of `model` on the remaining data ("catastrophic forgetting"). Returns (model, seconds)."""
    return _run(model, remaining, steps, lr, batch_size, seed, sign=1.0)


def gradient_ascent(
    model: SPMClassifier, forget: ImageDataset, steps: int, lr: float = 0.001, batch_size: int = 64, seed: int = 0
) -> tuple[SPMClassifier, float]:
    """Ascends the loss of a copy of `model` on the forget data. Returns (model, seconds)."""
    return _run(model, forget, steps, lr, batch_size, seed, sign=-1.0)
