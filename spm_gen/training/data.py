"""The training set of a run: the oracle's exclusions applied, and which items are memory-only."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..data import (
    ImageDataset,
    load_cifar10,
    load_digits_dataset,
    load_image_folder,
    load_saved_hf_dataset,
    to_memory_bank,
)
from ..memory.bank import MemoryBank
from ..memory.ranking import id_keys, ranked_rows
from .config import ClassifierTrainConfig, TrainConfig


@dataclass
class TrainingSet:
    """The items of a run (`dataset`: memory and training targets alike) and `targets` `(N,)`: whether each
    item is a denoising target (False: memory-only, a support image the weights are never trained on)."""

    dataset: ImageDataset
    targets: torch.Tensor

    @property
    def target_ids(self) -> list[str]:
        return [i for i, t in zip(self.dataset.ids, self.targets.tolist()) if t]

    @property
    def memory_only_ids(self) -> list[str]:
        return [i for i, t in zip(self.dataset.ids, self.targets.tolist()) if not t]

    def memory_bank(self) -> MemoryBank:
        """A memory bank of every item, recording which ones were training targets (see `MemoryBank`)."""
        bank = to_memory_bank(self.dataset)
        bank.set_training_targets(self.target_ids)
        return bank


def _source_dataset(config: TrainConfig | ClassifierTrainConfig) -> ImageDataset:
    if config.dataset == "digits":
        dataset = load_digits_dataset(image_size=config.image_size, split="train", seed=config.seed)
    elif config.dataset == "folder":
        dataset = load_image_folder(config.data_path, image_size=config.image_size, channels=config.channels)
    elif config.dataset == "cifar10":
        dataset = load_cifar10(config.data_path, train=True)
    else:
        dataset = load_saved_hf_dataset(config.data_path, channels=config.channels)
    if config.images_per_class is not None:
        dataset = dataset.first_per_class(config.images_per_class)
    return dataset


def read_ids_file(path: str) -> list[str]:
    """The ids of a json file holding a list of ids (strings or integers)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"memory_only_ids_file '{path}' does not exist")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list) or not all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in data):
        raise ValueError(f"memory_only_ids_file '{path}' must hold a json list of ids, got {type(data).__name__}")
    return [str(i) for i in data]


def memory_only_ids(config: TrainConfig | ClassifierTrainConfig, dataset: ImageDataset) -> set[str]:
    """The items of `dataset` (before the oracle's exclusions, so that an oracle keeps the same split) that are
    memory-only: the classes `memory_only_classes`, the ids of `memory_only_ids_file`, and in every class the
    `round(memory_only_fraction * n)` items of smallest seeded rank (`memory_only_seed`; the rank of an item
    depends on its id alone, as in memory retrieval)."""
    chosen: set[str] = set()
    labels = dataset.labels.numpy()
    if config.memory_only_classes:
        unknown = sorted(set(config.memory_only_classes) - set(labels.tolist()))
        if unknown:
            raise ValueError(f"memory_only_classes: the dataset has no classes {unknown}")
        chosen |= {i for i, c in zip(dataset.ids, labels.tolist()) if c in set(config.memory_only_classes)}
    if config.memory_only_ids_file:
        ids = read_ids_file(config.memory_only_ids_file)
        unknown = sorted(set(ids) - set(dataset.ids))
        if unknown:
            raise ValueError(f"memory_only_ids_file: ids not in the training set: {unknown[:10]}")
        chosen |= set(ids)
    if config.memory_only_fraction > 0:
        keys = id_keys(dataset.ids)
        for label in np.unique(labels):
            rows = np.flatnonzero(labels == label)
            count = int(round(config.memory_only_fraction * len(rows)))
            chosen |= {dataset.ids[r] for r in ranked_rows(rows, keys, count, config.memory_only_seed).tolist()}
    return chosen


def load_training_set(
    config: TrainConfig | ClassifierTrainConfig, image_shape: tuple[int, int, int], num_classes: int
) -> TrainingSet:
    """The dataset named by `config` (digits: the seeded train split), its first `images_per_class` images
    of each class when set, minus `exclude_ids` and `exclude_classes`, checked against the model's image
    shape `(C, H, W)` and number of classes; with the memory-only items of `memory_only_ids`."""
    dataset = _source_dataset(config)
    memory_only = memory_only_ids(config, dataset)
    if config.exclude_ids or config.exclude_classes:
        dataset = dataset.exclude(ids=config.exclude_ids, classes=config.exclude_classes)
    if dataset.image_shape != tuple(image_shape):
        raise ValueError(
            f"the dataset's images are {dataset.image_shape}, the model expects {tuple(image_shape)} "
            "(set the model's channels and size, or image_size / channels)"
        )
    if int(dataset.labels.max()) >= num_classes:
        raise ValueError(f"the dataset has labels up to {int(dataset.labels.max())}, the model {num_classes} classes")
    targets = torch.tensor([i not in memory_only for i in dataset.ids], dtype=torch.bool)
    if not bool(targets.any()):
        raise ValueError("every training item is memory-only: there is nothing to train the weights on")
    return TrainingSet(dataset, targets)


def load_training_dataset(
    config: TrainConfig | ClassifierTrainConfig, image_shape: tuple[int, int, int], num_classes: int
) -> ImageDataset:
    """The items of `load_training_set` (memory-only ones included)."""
    return load_training_set(config, image_shape, num_classes).dataset
