"""Pictures people look at: image grids and titled rows of images, saved as PNG."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.utils import make_grid


def grid_image(images: torch.Tensor, nrow: int | None = None, upscale: int = 1, padding: int = 1) -> Image.Image:
    """A PIL grid of float images `(N, C, H, W)` in [0, 1], each enlarged `upscale` times (nearest)."""
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"expected a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=1.0)
    array = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    if upscale > 1:
        image = image.resize((image.width * upscale, image.height * upscale), Image.NEAREST)
    return image


def save_image_grid(images: torch.Tensor, path: str, nrow: int | None = None, upscale: int = 1) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid_image(images, nrow, upscale).save(path)
    return path


def save_titled_rows(rows: dict[str, torch.Tensor], path: str, title: str = "") -> str:
    """One row of images per entry, titled with its key, in one PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.0 * len(rows) + 0.5), squeeze=False)
    for ax, (name, images) in zip(axes[:, 0], rows.items()):
        ax.imshow(grid_image(images, nrow=len(images)), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(name, fontsize=9, loc="left")
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] as float images in [0, 1]; float images pass unchanged."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """Images as a model sees them, in [-1, 1]: uint8 in [0, 255] or float in [0, 1] (as `x * 2 - 1`)."""
    return to_unit_range(images) * 2 - 1


def from_model_range(images: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Model-space images in [-1, 1] as float images in [0, 1] (clamped unless `clamp` is False)."""
    images = images / 2 + 0.5
    return images.clamp(0, 1) if clamp else images


def load_image(path: str, image_size: int | None = None, channels: int = 3) -> torch.Tensor:
    """One image file as uint8 `(C, H, W)`, optionally resized to `image_size` x `image_size`.

    Raises:
        ValueError: the file is not a readable image, or `channels` is not 1 or 3.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if image_size is not None:
                img = img.resize((image_size, image_size), Image.BICUBIC)
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"cannot read image '{path}': {e}") from e
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy())
