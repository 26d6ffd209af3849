"""Image folders with one subfolder per class (`root/<class_name>/<image>`)."""

from __future__ import annotations

import os

import torch

from ..utils.images import load_image
from .dataset import ImageDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_image_folder(root: str, image_size: int | None = None, channels: int = 3) -> ImageDataset:
    """Loads `root/<class>/<image>`; classes are the sorted subfolder names, ids are `"<class>/<file>"`.

    Args:
        root: the folder.
        image_size: resize every image to this square size; None requires all images to share one size.
        channels: 1 (grayscale) or 3 (RGB).
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder '{root}' does not exist")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise ValueError(f"image folder '{root}' has no class subfolders (expected root/<class>/<image>)")
    images, labels, ids = [], [], []
    for label, name in enumerate(classes):
        for file in sorted(os.listdir(os.path.join(root, name))):
            if not file.lower().endswith(IMAGE_EXTENSIONS):
                continue
            image = load_image(os.path.join(root, name, file), image_size, channels)
            if images and image.shape != images[0].shape:
                raise ValueError(
                    f"image '{name}/{file}' has shape {tuple(image.shape)}, others {tuple(images[0].shape)}; "
                    "pass image_size= to resize"
                )
            images.append(image)
            labels.append(label)
            ids.append(f"{name}/{file}")
    if not images:
        raise ValueError(f"image folder '{root}' holds no images with extensions {IMAGE_EXTENSIONS}")
    return ImageDataset(torch.stack(images), torch.tensor(labels), ids, classes)
