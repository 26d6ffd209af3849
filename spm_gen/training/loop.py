"""The training loop: `train(config)` runs under `accelerate launch` (one CPU, one GPU or many GPUs).

Every step draws its batch, support set, permutation, noise and timesteps from a generator seeded by
(seed, step, process), so a resumed run repeats exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from ..data import ImageDataset, to_memory_bank
from ..models.unet_spm import SPMUNet2DModel
from ..utils.images import save_image_grid
from .checkpoints import resolve_resume, save_checkpoint
from .config import TrainConfig
from .data import load_training_dataset
from .logs import append_loss, plot_losses, truncate_losses
from .losses import diffusion_loss
from .memory_sampling import SupportSampler

logger = get_logger(__name__)


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device).manual_seed(seed * 1_000_003 + step * 1_009 + rank)


def build_pipeline(unet: SPMUNet2DModel, noise_scheduler: DDPMScheduler, dataset: ImageDataset):
    """The run's pipeline: DDIM (the paper's sampler), memory = the training set (minus exclusions)."""
    from pipelines import SPMDiffusionPipeline

    bank = to_memory_bank(dataset) if unet.uses_memory else None
    pipe = SPMDiffusionPipeline(unet, DDIMScheduler.from_config(noise_scheduler.config), bank)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample_grid(pipe, config: TrainConfig, num_classes: int, path: str) -> str:
    """`num_sample_images` samples, classes cycling, one row per class."""
    labels = [i % num_classes for i in range(config.num_sample_images)]
    labels.sort()
    images = pipe(
        class_labels=labels,
        num_inference_steps=config.sample_inference_steps,
        guidance_scale=config.guidance_scale,
        generator=torch.Generator(pipe.unet.device).manual_seed(config.seed),
        output_type="pt",
    ).images
    per_row = math.ceil(config.num_sample_images / num_classes)
    return save_image_grid(images, path, nrow=per_row, upscale=4)


def train(config: TrainConfig) -> str | None:
    """Trains the model of `config`; returns the final pipeline folder on the main process (None elsewhere)."""
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=config.log_with,
        project_dir=config.output_dir,
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    run_dir = config.output_dir
    if accelerator.is_main_process:
        os.makedirs(os.path.join(run_dir, "samples"), exist_ok=True)
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            f.write(config.to_json())
    accelerator.wait_for_everyone()
    device, rank = accelerator.device, accelerator.process_index

    set_seed(config.seed)  # the same initial weights on every process and in every run with this seed
    unet = SPMUNet2DModel(**config.model)
    num_classes = unet.config.num_class_embeds
    cfg = unet.config
    dataset = load_training_dataset(config, (cfg.in_channels, cfg.sample_size, cfg.sample_size), num_classes)
    images_all = dataset.images  # uint8 on the CPU; batches move to the device
    sampler = SupportSampler(dataset.labels, num_classes)
    logger.info(f"training {unet.config.fusion_type} on {len(dataset)} images; {accelerator.num_processes} process(es)")

    ema = None
    if config.use_ema:
        ema = EMAModel(
            unet.parameters(), decay=config.ema_decay, use_ema_warmup=config.ema_warmup,
            model_cls=SPMUNet2DModel, model_config=unet.config,
        )  # fmt: skip
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay,
    )
    lr_scheduler = get_scheduler(
        "constant_with_warmup",
        optimizer,
        num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=config.max_train_steps * accelerator.num_processes,
    )
    noise_scheduler = DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule="linear",
    )
    model, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    if ema is not None:
        ema.to(device)
        accelerator.register_for_checkpointing(ema)
    if config.log_with:
        accelerator.init_trackers("spm-gen", config={k: str(v) for k, v in vars(config).items()})

    loss_log = os.path.join(run_dir, "loss.jsonl")
    start_step = 0
    resumed = resolve_resume(run_dir, config.resume)
    if resumed is not None:
        accelerator.load_state(resumed[0])
        start_step = resumed[1]
        if accelerator.is_main_process:
            truncate_losses(loss_log, start_step)
        logger.info(f"resumed from {resumed[0]} at step {start_step}")
    elif accelerator.is_main_process and os.path.exists(loss_log):
        os.remove(loss_log)

    progress = tqdm(
        range(start_step, config.max_train_steps),
        initial=start_step,
        total=config.max_train_steps,
        desc="training",
        disable=not accelerator.is_local_main_process,
    )
    running = []
    for step in progress:
        generator = step_generator(config.seed, step, rank, torch.device("cpu"))
        device_generator = step_generator(config.seed, step, rank, device)
        for _ in range(config.gradient_accumulation_steps):
            with accelerator.accumulate(model):
                idx, labels, support, support_labels = sampler.draw(
                    config.train_batch_size,
                    config.memory_per_batch if unet.uses_memory else None,
                    config.permute_labels,
                    generator,
                )
                images = images_all[idx].to(device).float() / 127.5 - 1
                support_images = None
                if support is not None:
                    support_images = images_all[support].to(device).float() / 127.5 - 1
                    support_labels = support_labels.to(device)
                with accelerator.autocast():
                    loss = diffusion_loss(
                        model, accelerator.unwrap_model(model), noise_scheduler, images, labels.to(device),
                        device_generator, config.class_dropout, support_images, support_labels,
                    )  # fmt: skip
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                running.append(accelerator.gather(loss.detach()[None]).mean().item())
        if ema is not None:
            ema.step(accelerator.unwrap_model(model).parameters())
        global_step = step + 1
        if global_step % config.log_every == 0 or global_step == config.max_train_steps:
            record = {"step": global_step, "loss": sum(running) / len(running), "lr": lr_scheduler.get_last_lr()[0]}
            running = []
            progress.set_postfix(loss=f"{record['loss']:.4f}")
            if accelerator.is_main_process:
                append_loss(loss_log, record)
            if config.log_with:
                accelerator.log(record, step=global_step)
        if global_step % config.checkpointing_steps == 0 or global_step == config.max_train_steps:
            save_checkpoint(accelerator, run_dir, global_step, config.checkpoints_total_limit)
        if global_step % config.sample_every == 0 and accelerator.is_main_process:
            with _ema_weights(accelerator.unwrap_model(model), ema) as weights:
                pipe = build_pipeline(weights, noise_scheduler, dataset)
                sample_grid(pipe, config, num_classes, os.path.join(run_dir, "samples", f"step-{global_step:06d}.png"))

    accelerator.wait_for_everyone()
    final = None
    if accelerator.is_main_process:
        final = export_pipeline(accelerator.unwrap_model(model), ema, noise_scheduler, dataset, config, run_dir)
        plot_losses(loss_log, os.path.join(run_dir, "loss.png"), title=f"{unet.config.fusion_type} on {config.dataset}")
    accelerator.end_training()
    return final


class _ema_weights:
    """A float32 copy of the unet holding the EMA weights (the current weights without EMA), in eval mode;
    the training model is never touched."""

    def __init__(self, unet: SPMUNet2DModel, ema: EMAModel | None) -> None:
        self.unet, self.ema = unet, ema

    def __enter__(self) -> SPMUNet2DModel:
        copy_ = copy.deepcopy(self.unet).float()
        if self.ema is not None:
            self.ema.copy_to(copy_.parameters())
        return copy_.eval()

    def __exit__(self, *exc) -> None:
        return None


def export_pipeline(unet, ema, noise_scheduler, dataset, config: TrainConfig, run_dir: str) -> str:
    """Writes `<run>/pipeline` (EMA weights, DDIM scheduler, memory = training set) and a sample grid per class."""
    final, tmp = os.path.join(run_dir, "pipeline"), os.path.join(run_dir, "pipeline.tmp")
    with _ema_weights(unet, ema) as weights:
        pipe = build_pipeline(weights, noise_scheduler, dataset)
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        pipe.save_pretrained(tmp)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        sample_grid(pipe, config, pipe.unet.config.num_class_embeds, os.path.join(run_dir, "samples", "final.png"))
    logger.info(f"saved the pipeline to {final}")
    return final
