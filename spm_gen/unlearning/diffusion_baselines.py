"""Parametric unlearning for a diffusion model (the twin), each mixed with descent on remaining data:

- gradient ascent on the denoising loss of the forget data;
- random-label fine-tuning with a saliency mask (SalUn, Fan et al. 2024): on forget images, the prediction
  under their own label is trained towards the original model's prediction under a random other label, and
  only the weights with the largest forget-loss gradients (the salient `saliency` share) are updated.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from ..data import ImageDataset
from ..models.unet_spm import SPMUNet2DModel
from ..training.losses import diffusion_loss
from ..training.run import TrainingBatch
from ..utils.images import to_model_range
from ..utils.processes import process_state
from ..utils.progress import progress

# (model, a forget batch, generator) -> the loss on it
ForgetLoss = Callable[[SPMUNet2DModel, TrainingBatch, torch.Generator], torch.Tensor]


def _check(unet: SPMUNet2DModel, forget: ImageDataset) -> None:
    if unet.uses_memory:
        raise ValueError("parametric unlearning applies to the parametric twin (fusion_type='none'), not to an SPM")
    if len(forget) == 0:
        raise ValueError("the forget set is empty")


@dataclass(frozen=True)
class UnlearningBudget:
    """How one parametric unlearning run spends its effort: `steps` AdamW steps at `lr` on batches of
    `batch_size` (seeded by `seed`), with `remain_weight` x the denoising loss of `remain` added, updating only
    the `saliency` share of most salient weights when given."""

    steps: int
    lr: float
    remain: ImageDataset | None = None
    remain_weight: float = 1.0
    batch_size: int = 32
    seed: int = 0
    saliency: float | None = None
    desc: str = "unlearning"


def _unlearn(
    unet: SPMUNet2DModel,
    scheduler: DDPMScheduler,
    forget: ImageDataset,
    forget_loss: ForgetLoss,
    budget: UnlearningBudget,
) -> tuple[SPMUNet2DModel, float]:
    """A copy of `unet` after `budget.steps` steps on `forget_loss` (see `UnlearningBudget`). Returns
    `(unet, seconds)`."""
    start = time.perf_counter()
    model = copy.deepcopy(unet).train()
    generator = torch.Generator().manual_seed(budget.seed)
    device = next(model.parameters()).device

    def batch(data: ImageDataset) -> tuple[TrainingBatch, torch.Generator]:
        idx = torch.randint(0, len(data), (min(budget.batch_size, len(data)),), generator=generator)
        step_generator = torch.Generator(device).manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
        return TrainingBatch(data.images[idx].to(device), data.labels[idx].to(device)), step_generator

    def denoising(data: TrainingBatch, g: torch.Generator) -> torch.Tensor:
        return diffusion_loss(model, scheduler, data, g)

    # dropout draws its masks from torch's global generator: seeded here, and restored afterwards
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(budget.seed)
        masks = saliency_masks(model, lambda: denoising(*batch(forget)), budget.saliency) if budget.saliency else None
        optimizer = torch.optim.AdamW(model.parameters(), lr=budget.lr, weight_decay=0.0)  # masked weights stay put
        remain = budget.remain
        for _ in progress(range(budget.steps), budget.desc, disable=not process_state().is_local_main_process):
            loss = forget_loss(model, *batch(forget))
            if remain is not None and len(remain) and budget.remain_weight:
                loss = loss + budget.remain_weight * denoising(*batch(remain))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if masks is not None:
                for p, m in zip(model.parameters(), masks):
                    if p.grad is not None:
                        p.grad.mul_(m)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    return model.eval(), time.perf_counter() - start


def saliency_masks(model: torch.nn.Module, loss: Callable[[], torch.Tensor], share: float, batches: int = 4):
    """SalUn's weight saliency: masks (one per parameter) keeping the `share` of all weights with the largest
    gradient magnitude of the forget loss, accumulated over `batches` batches."""
    if not 0 < share <= 1:
        raise ValueError(f"saliency must be in (0, 1], got {share}")
    model.zero_grad(set_to_none=True)
    for _ in range(batches):
        loss().backward()
    grads = [p.grad.abs() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    flat = torch.cat([g.flatten() for g in grads])
    k = max(1, int(round((1 - share) * len(flat))))
    threshold = torch.kthvalue(flat.cpu(), k).values.to(flat.device)
    model.zero_grad(set_to_none=True)
    return [(g >= threshold).to(g.dtype) for g in grads]


def diffusion_gradient_ascent(
    unet: SPMUNet2DModel, scheduler: DDPMScheduler, forget: ImageDataset, budget: UnlearningBudget
) -> tuple[SPMUNet2DModel, float]:
    """A copy of the twin `unet` after `budget.steps` steps of ascent on the forget data's loss (and descent
    on `budget.remain`'s, weighted by `remain_weight`, when given). Returns `(unet, seconds)`."""
    _check(unet, forget)

    def ascent(model: SPMUNet2DModel, data: TrainingBatch, g: torch.Generator) -> torch.Tensor:
        return -diffusion_loss(model, scheduler, data, g)

    return _unlearn(unet, scheduler, forget, ascent, replace(budget, desc="gradient ascent"))


def diffusion_random_label(
    unet: SPMUNet2DModel, scheduler: DDPMScheduler, forget: ImageDataset, budget: UnlearningBudget
) -> tuple[SPMUNet2DModel, float]:
    """SalUn's random-label unlearning for a class-conditional twin: for forget images `x` of label `c`, the
    prediction `eps(x_t | c)` is trained towards the original model's `eps(x_t | c')` for a random other
    label `c'`, updating only the `budget.saliency` share of weights most salient to the forget loss (None: all).
    Returns `(unet, seconds)`."""
    _check(unet, forget)
    frozen = copy.deepcopy(unet).eval().requires_grad_(False)
    num_classes = unet.config.num_class_embeds
    if num_classes is None or num_classes < 2:
        raise ValueError("random-label unlearning needs a class-conditional model with at least two classes")

    def random_label(model: SPMUNet2DModel, data: TrainingBatch, g: torch.Generator) -> torch.Tensor:
        images, labels = to_model_range(data.images), data.labels
        noise = torch.randn(images.shape, generator=g, device=images.device, dtype=images.dtype)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(images),), generator=g, device=images.device)
        noisy = scheduler.add_noise(images, noise, t)
        other = (labels + torch.randint(1, num_classes, labels.shape, generator=g, device=labels.device)) % num_classes
        with torch.no_grad():
            target = frozen(noisy, t, other).sample
        return F.mse_loss(model(noisy, t, labels).sample.float(), target.float())

    return _unlearn(unet, scheduler, forget, random_label, replace(budget, desc="random-label (SalUn)"))
