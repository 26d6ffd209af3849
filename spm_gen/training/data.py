"""The training set of a run, with the oracle's exclusions applied."""

from __future__ import annotations

from ..data import ImageDataset, load_cifar10, load_digits_dataset, load_image_folder, load_saved_hf_dataset
from .config import ClassifierTrainConfig, TrainConfig


def load_training_dataset(
    config: TrainConfig | ClassifierTrainConfig, image_shape: tuple[int, int, int], num_classes: int
) -> ImageDataset:
    """The dataset named by `config` (digits: the seeded train split), its first `images_per_class` images
    of each class when set, minus `exclude_ids` and `exclude_classes`, checked against the model's image
    shape `(C, H, W)` and number of classes."""
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
    if config.exclude_ids or config.exclude_classes:
        dataset = dataset.exclude(ids=config.exclude_ids, classes=config.exclude_classes)
    if dataset.image_shape != tuple(image_shape):
        raise ValueError(
            f"the dataset's images are {dataset.image_shape}, the model expects {tuple(image_shape)} "
            "(set the model's channels and size, or image_size / channels)"
        )
    if int(dataset.labels.max()) >= num_classes:
        raise ValueError(f"the dataset has labels up to {int(dataset.labels.max())}, the model {num_classes} classes")
    return dataset
