"""Pictures people look at: image grids and titled rows of images, saved as PNG."""

from __future__ import annotations

import math
import os

import torch
from PIL import Image
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
