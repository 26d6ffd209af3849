"""Datasets: bundled digits, image folders, local CIFAR-10, datasets saved with `save_to_disk`."""

from .cifar10 import load_cifar10
from .dataset import ImageDataset, to_memory_bank
from .digits import load_digits_dataset
from .folders import load_image, load_image_folder
from .hf_disk import load_saved_hf_dataset

__all__ = [
    "ImageDataset",
    "load_cifar10",
    "load_digits_dataset",
    "load_image",
    "load_image_folder",
    "load_saved_hf_dataset",
    "to_memory_bank",
]
