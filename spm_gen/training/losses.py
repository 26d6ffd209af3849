"""The denoising loss (Ho et al. 2020, eq. 14: || eps - eps_theta(x_t, t) ||^2) for SPMs and their twins."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from ..models.unet_spm import SPMUNet2DModel


def diffusion_loss(
    model: torch.nn.Module,
    unet: SPMUNet2DModel,
    scheduler: DDPMScheduler,
    images: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    class_dropout: float,
    support_images: torch.Tensor | None = None,
    support_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Noise-prediction MSE of one batch.

    Args:
        model: the module to call (the unet, possibly wrapped for distributed training).
        unet: the unwrapped unet (its config and `encode_memory`).
        scheduler: gives the noise schedule (`add_noise`).
        images (`torch.Tensor` of shape `(B, C, H, W)`): clean images in [-1, 1].
        labels (`torch.Tensor` of shape `(B,)`): their (possibly permuted) labels.
        generator: the batch's random stream (noise, timesteps, label dropout), on the images' device.
        class_dropout: probability that a query gets the null label (guidance). A dropped query reads all
            memory, like the unconditional branch at sampling time.
        support_images / support_labels: the batch's memory, for an SPM.
    """
    device, batch = images.device, images.shape[0]
    num_steps = scheduler.config.num_train_timesteps
    noise = torch.randn(images.shape, generator=generator, device=device, dtype=images.dtype)
    timesteps = torch.randint(0, num_steps, (batch,), generator=generator, device=device)
    noisy = scheduler.add_noise(images, noise, timesteps)
    dropped = torch.rand(batch, generator=generator, device=device) < class_dropout
    model_labels = torch.where(dropped, torch.full_like(labels, unet.null_class_label), labels)
    if not unet.uses_memory:
        return F.mse_loss(model(noisy, timesteps, model_labels).sample.float(), noise.float())
    if unet.config.memory_encoding == "paper":  # memory noised at random timesteps, as in the official code
        memory_t = torch.randint(0, num_steps, (len(support_images),), generator=generator, device=device)
        memory_noise = torch.randn(support_images.shape, generator=generator, device=device, dtype=images.dtype)
        tokens = unet.encode_memory(
            scheduler.add_noise(support_images, memory_noise, memory_t), support_labels, memory_t
        )
    else:
        tokens = unet.encode_memory(support_images, support_labels)
    query_memory = torch.where(dropped, torch.full_like(labels, -1), labels)
    prediction = model(noisy, timesteps, model_labels, tokens, support_labels, query_memory).sample
    return F.mse_loss(prediction.float(), noise.float())
