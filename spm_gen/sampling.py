"""Sampling many images into a folder, split across the processes of `accelerate launch`."""

from __future__ import annotations

import os
import re

import torch

from .metrics.fid import save_png
from .utils.images import to_unit_range
from .utils.processes import process_state
from .utils.progress import progress

NAME = re.compile(r"^\d{6}_class(\d+)\.png$")


def load_pipeline(pipeline_dir: str):
    """A saved `SPMDiffusionPipeline` on this process's device, its per-call progress bar off (callers
    show their own)."""
    from .pipelines import SPMDiffusionPipeline

    pipe = SPMDiffusionPipeline.from_pretrained(pipeline_dir).to(process_state().device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample_to_folder(
    pipe,
    class_labels: list[int],
    folder: str,
    batch_size: int = 64,
    seed: int = 0,
    **pipeline_kwargs,
) -> list[str]:
    """Samples one image per entry of `class_labels` into `folder` as `<index>_class<label>.png`.

    Under `accelerate launch` every process samples a contiguous share of the indices (each batch seeded
    by `seed` and its first index) and writes only its own files; the union is the whole set. Returns the
    files this process wrote.
    """
    state = process_state()
    os.makedirs(folder, exist_ok=True)
    indices = list(range(len(class_labels)))
    written = []
    with state.split_between_processes(indices) as mine:
        batches = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
        for batch in progress(batches, "sampling", disable=not state.is_local_main_process):
            images = pipe(
                class_labels=[class_labels[i] for i in batch],
                generator=torch.Generator(pipe.unet.device).manual_seed(seed * 1_000_003 + batch[0]),
                output_type="pt",
                **pipeline_kwargs,
            ).images
            for i, image in zip(batch, images):
                written.append(save_png(image, os.path.join(folder, f"{i:06d}_class{class_labels[i]}.png")))
    state.wait_for_everyone()
    return written


def read_sample_folder(folder: str, channels: int) -> tuple[torch.Tensor, list[int]]:
    """Images `(N, C, H, W)` in [0, 1] and class labels of a folder written by `sample_to_folder`."""
    from .data.folders import load_image

    files = sorted(f for f in os.listdir(folder) if NAME.match(f))
    if not files:
        raise ValueError(f"no samples in '{folder}' (expected files like 000000_class3.png)")
    labels = [int(NAME.match(f).group(1)) for f in files]
    images = to_unit_range(torch.stack([load_image(os.path.join(folder, f), channels=channels) for f in files]))
    return images, labels
