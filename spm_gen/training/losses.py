"""The denoising loss (Ho et al. 2020, eq. 14: || eps - eps_theta(x_t, t) ||^2) for SPMs and their twins."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from diffusers import DDPMScheduler

from ..choices import SelfSupport
from ..memory.readout import MemoryReadout
from ..utils.images import from_model_range, to_model_range
from .run import TrainingBatch


@dataclass(frozen=True)
class LossOptions:
    """Label dropout for classifier-free guidance, as in the official training step: `class_dropout` is the
    probability that a query gets the null label, `memory_label_dropout` that a memory item is encoded with
    the null label. Only the class embedding is nulled: every query still reads the memory of its true label
    (the unconditional branch at sampling time reads its own class's memory the same way)."""

    class_dropout: float = 0.0
    memory_label_dropout: float = 0.0
    self_support: SelfSupport = "never"  # when a query's own image joins its own support (`self_support`)
    self_support_timestep: int = 100
    self_support_probability: float = 0.5


def self_support(timesteps: torch.Tensor, generator: torch.Generator, options: LossOptions) -> torch.Tensor | None:
    """Which queries read their own image `(B,)` bool, or None when none ever does (the paper's training).

    Memorization is needed only at low noise, where the denoiser supplies a specific image's detail (Shah et
    al. 2025): with `"below_timestep"` a query whose timestep is below `self_support_timestep` finds its own
    image in memory, so its detail can come from memory rather than from the weights; `"probability"` does so
    with a fixed probability at every timestep (for comparison). Draws from `generator` only for the latter."""
    if options.self_support == "never":
        return None
    if options.self_support == "below_timestep":
        return timesteps < options.self_support_timestep
    draw = torch.rand(len(timesteps), generator=generator, device=timesteps.device)
    return draw < options.self_support_probability


def nearest_readout(groups: torch.Tensor, own: torch.Tensor | None, num_shared: int, num_items: int) -> MemoryReadout:
    """Nearest-support training: query q reads its neighbours `groups[q]` (positions in the support), and,
    where `own[q]`, its own image (appended to the support after the `num_shared` neighbours, in query order),
    first in its group (the anchor of `anchor_pixels`), as an anchor readout puts the anchor first."""
    valid = torch.ones_like(groups, dtype=torch.bool)
    if own is not None:
        own_index = torch.zeros((len(groups), 1), dtype=groups.dtype, device=groups.device)
        own_index[own, 0] = num_shared + torch.arange(int(own.sum()), device=groups.device)
        pad = torch.zeros_like(own_index)
        mine = own[:, None]
        groups = torch.where(mine, torch.cat([own_index, groups], 1), torch.cat([groups, pad], 1))
        valid = torch.cat([valid, own[:, None]], 1)  # the last column: a neighbour where own, else padding
    query_group = torch.arange(len(groups), device=groups.device)
    return MemoryReadout.from_groups(groups, valid, query_group, num_items)


def diffusion_loss(
    model: torch.nn.Module,
    scheduler: DDPMScheduler,
    batch: TrainingBatch,
    generator: torch.Generator,
    options: LossOptions = LossOptions(),
) -> torch.Tensor:
    """Noise-prediction MSE of one batch.

    Args:
        model: the unet to call (possibly wrapped for distributed training).
        scheduler: gives the noise schedule (`add_noise`).
        batch: query images and labels, and for an SPM the batch's memory (support images and labels).
        generator: the batch's random stream (noise, timesteps, label dropout), on the images' device.
        options: see `LossOptions`.
    """
    unet = extract_model_from_parallel(model)
    images = to_model_range(batch.images)
    labels, device, size = batch.labels, images.device, images.shape[0]
    num_steps = scheduler.config.num_train_timesteps
    noise = torch.randn(images.shape, generator=generator, device=device, dtype=images.dtype)
    timesteps = torch.randint(0, num_steps, (size,), generator=generator, device=device)
    noisy = scheduler.add_noise(images, noise, timesteps)
    dropped = torch.rand(size, generator=generator, device=device) < options.class_dropout
    model_labels = torch.where(dropped, torch.full_like(labels, unet.null_class_label), labels)
    if not unet.uses_memory:
        return F.mse_loss(model(noisy, timesteps, model_labels).sample.float(), noise.float())
    support, support_labels, owner = batch.support_images, batch.support_labels, None
    num_shared = len(support)
    own = self_support(timesteps, generator, options)
    if own is not None:  # each such query's own image joins the support, private to that query
        mine = torch.nonzero(own).flatten()
        shared = torch.full((len(support),), -1, dtype=torch.long, device=device)
        support = torch.cat([support, batch.images[mine]])
        support_labels, owner = torch.cat([support_labels, labels[mine]]), torch.cat([shared, mine])
    memory_dropped = torch.rand(len(support), generator=generator, device=device) < options.memory_label_dropout
    memory_embedding_labels = torch.where(memory_dropped, unet.null_class_label, support_labels)
    if unet.config.memory_encoding == "paper":  # memory noised at random timesteps, as in the official code
        memory_t = torch.randint(0, num_steps, (len(support),), generator=generator, device=device)
        memory_noise = torch.randn(support.shape, generator=generator, device=device, dtype=images.dtype)
        noisy_support = scheduler.add_noise(to_model_range(support), memory_noise, memory_t)
        noisy_unit = from_model_range(noisy_support, clamp=False)
        tokens = unet.encode_memory(noisy_unit, memory_embedding_labels, memory_t)
    else:
        tokens = unet.encode_memory(support, memory_embedding_labels)
    if batch.support_groups is None:
        readout = MemoryReadout.from_labels(labels, support_labels, owner)  # routed by the true labels
    else:
        readout = nearest_readout(batch.support_groups, own, num_shared, len(support))
    prediction = model(noisy, timesteps, model_labels, tokens, readout).sample
    return F.mse_loss(prediction.float(), noise.float())
