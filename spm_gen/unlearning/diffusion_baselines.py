"""Parametric unlearning for a diffusion model (the twin): gradient ascent on the denoising loss of the
forget data, optionally mixed with descent on remaining data to keep the rest of the distribution."""

from __future__ import annotations

import copy
import time

import torch
from accelerate import PartialState
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from ..data import ImageDataset
from ..models.unet_spm import SPMUNet2DModel
from ..training.losses import diffusion_loss


def diffusion_gradient_ascent(
    unet: SPMUNet2DModel,
    scheduler: DDPMScheduler,
    forget: ImageDataset,
    steps: int,
    lr: float = 1e-5,
    remain: ImageDataset | None = None,
    remain_weight: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
) -> tuple[SPMUNet2DModel, float]:
    """A copy of the twin `unet` after `steps` steps of ascent on the forget data's loss (and descent on
    `remain`'s, weighted by `remain_weight`, when given). Returns `(unet, seconds)`."""
    if unet.uses_memory:
        raise ValueError("diffusion_gradient_ascent applies to the parametric twin (fusion_type='none')")
    if len(forget) == 0:
        raise ValueError("the forget set is empty")
    start = time.perf_counter()
    model = copy.deepcopy(unet).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device

    def batch_loss(data: ImageDataset) -> torch.Tensor:
        idx = torch.randint(0, len(data), (min(batch_size, len(data)),), generator=generator)
        images = data.images[idx].to(device).float() / 127.5 - 1
        step_generator = torch.Generator(device).manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
        return diffusion_loss(model, model, scheduler, images, data.labels[idx].to(device), step_generator, 0.0)

    for _ in tqdm(range(steps), desc="gradient ascent", disable=not PartialState().is_local_main_process):
        loss = -batch_loss(forget)
        if remain is not None and len(remain):
            loss = loss + remain_weight * batch_loss(remain)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model.eval(), time.perf_counter() - start
