"""The diffusion training loop: `train(config)` runs under `accelerate launch` (one CPU, one GPU or many
GPUs), on the shared run skeleton (`spm_gen.training.run`)."""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import signal
import threading
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from ..models.unet_spm import SPMUNet2DModel
from ..utils.images import save_titled_rows
from .checkpoints import checkpoint_steps, load_ema, resolve_resume, save_checkpoint
from .config import TrainConfig
from .data import TrainingSet
from .losses import LossOptions, diffusion_loss
from .run import TrainingRun

logger = get_logger(__name__)


class StopRequests:
    """Ctrl-C (SIGINT) and SIGTERM during training: the step in progress finishes, then the run stops with a
    checkpoint (see `_stopped`) instead of a traceback. Installed in the main thread only."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _request(self, signum: int, frame) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True
        logger.warning(f"{signal.Signals(signum).name}: stopping after this step (again to stop at once)")

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._request)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _stopped(accelerator: Accelerator, config: TrainConfig, step: int, ema: EMAModel | None) -> None:
    """A run stopped by a signal after `step`: a checkpoint of it (one process; with several, the last
    periodic checkpoint stands), and how to go on."""
    if accelerator.num_processes == 1 and step not in checkpoint_steps(config.output_dir):
        save_checkpoint(accelerator, config.output_dir, step, config.checkpoints_total_limit, ema)
    saved = checkpoint_steps(config.output_dir)
    where = f"the last checkpoint (step {max(saved)})" if saved else "no checkpoint yet"
    logger.warning(f"stopped after step {step}; {where}: run the same command with --resume latest to go on")


def can_compile(device: torch.device) -> bool:
    """Whether `torch.compile` can build kernels for `device`: inductor needs a C++ compiler on the CPU and
    Triton on CUDA."""
    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return any(shutil.which(name) for name in ("c++", "g++", "clang++"))


def official_ddim(noise_scheduler: DDPMScheduler) -> DDIMScheduler:
    """The paper's sampler as the official code runs it: DDIM on the training schedule, timesteps
    1, 1 + T/n, ... (`steps_offset=1`), x0 clipped to [-1, 1] (the pipeline re-derives eps from the clipped x0)
    and the last step to alpha_bar of the first timestep (`set_alpha_to_one=False`)."""
    return DDIMScheduler.from_config(
        noise_scheduler.config, clip_sample=True, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading"
    )


def build_pipeline(
    unet: SPMUNet2DModel, noise_scheduler: DDPMScheduler, training_set: TrainingSet, config: TrainConfig
):
    """The run's pipeline: DDIM (the paper's sampler), memory = the training set (minus exclusions; memory-only
    items included) recording which items were training targets, the config's `guidance_scale` as its
    default, and after nearest-support training the anchor retrieval of `support_neighbours` items."""
    from ..pipelines import SPMDiffusionPipeline

    bank = training_set.memory_bank() if unet.uses_memory else None
    nearest = config.support == "nearest"
    pipe = SPMDiffusionPipeline(
        unet,
        official_ddim(noise_scheduler),
        bank,
        default_guidance_scale=config.guidance_scale,
        default_memory_retrieval="anchor" if nearest else "random",
        default_memory_size=config.support_neighbours if nearest else None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample_grid(pipe, config: TrainConfig, num_classes: int, path: str) -> str:
    """`num_sample_images` samples, classes cycling, one row per class, each row titled with its class."""
    labels = [i % num_classes for i in range(config.num_sample_images)]
    labels.sort()
    images = pipe(
        class_labels=labels,
        num_inference_steps=config.sample_inference_steps,
        generator=torch.Generator(pipe.unet.device).manual_seed(config.seed),
        output_type="pt",
    ).images
    rows = {f"class {c}": images[torch.tensor(labels) == c] for c in sorted(set(labels))}
    return save_titled_rows(rows, path, title=f"samples, guidance {config.guidance_scale}")


@dataclass
class Optimization:
    """What one optimisation step needs: the prepared model, optimiser and learning-rate schedule, the noise
    schedule and the loss options. `train` runs its steps; benchmarks time them."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    noise_scheduler: DDPMScheduler
    options: LossOptions
    max_grad_norm: float

    @classmethod
    def prepare(cls, config: TrainConfig, unet: SPMUNet2DModel, accelerator: Accelerator) -> Optimization:
        """AdamW, constant learning rate after a linear warm-up, DDPM's linear noise schedule; the model,
        optimiser and schedule go through `accelerator.prepare` (devices, mixed precision, DDP)."""
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
        if config.compile_fusion and unet.config.fusion_type == "additive":
            if can_compile(accelerator.device):
                unet.compile_fusion(dynamic=True)  # dynamic: batches of other label counts do not recompile
            else:
                logger.warning(
                    "compile_fusion: torch.compile has no compiler here (a C++ compiler, or Triton on "
                    "CUDA); training with the eager additive score"
                )
        model, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
        options = LossOptions(
            class_dropout=config.class_dropout,
            memory_label_dropout=config.memory_label_dropout,
            self_support=config.self_support,
            self_support_timestep=config.self_support_timestep,
            self_support_probability=config.self_support_probability,
        )
        return cls(accelerator, model, optimizer, lr_scheduler, noise_scheduler, options, config.max_grad_norm)

    def step(self, run: TrainingRun, generator: torch.Generator, device_generator: torch.Generator) -> None:
        """One optimisation step (its micro-batches drawn by `run`), under the accelerator's autocast."""
        accelerator, model = self.accelerator, self.model
        for _ in range(run.config.gradient_accumulation_steps):
            with accelerator.accumulate(model):
                batch = run.draw(generator)
                with accelerator.autocast():
                    loss = diffusion_loss(model, self.noise_scheduler, batch, device_generator, self.options)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), self.max_grad_norm)
                self.optimizer.step()
                self.lr_scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                run.add_loss(loss)


def train(config: TrainConfig) -> str | None:
    """Trains the model of `config`; returns the final pipeline folder on the main process (None elsewhere)."""
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=config.log_with,
        project_dir=config.output_dir,
    )
    set_seed(config.seed)  # the same initial weights on every process and in every run with this seed
    unet = SPMUNet2DModel(**config.model)
    cfg = unet.config
    neighbours = config.support_neighbours if config.support == "nearest" else None
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    run = TrainingRun.start(config, shape, cfg.num_class_embeds, unet.uses_memory, accelerator, neighbours)
    logger.info(f"training {cfg.fusion_type} on {len(run.dataset)} images; {accelerator.num_processes} process(es)")

    ema = None
    if config.use_ema:
        ema = EMAModel(
            unet.parameters(),
            decay=config.ema_decay,
            use_ema_warmup=config.ema_warmup,
            model_cls=SPMUNet2DModel,
            model_config=cfg,
        )
    steps = Optimization.prepare(config, unet, accelerator)
    model = steps.model
    if ema is not None:
        ema.to(accelerator.device)  # saved by save_checkpoint as safetensors, not through accelerate's pickle
    if config.log_with:
        accelerator.init_trackers("spm-gen", config={k: str(v) for k, v in vars(config).items()})

    start_step = 0
    resumed = resolve_resume(config.output_dir, config.resume)
    if resumed is not None:
        accelerator.load_state(resumed[0])
        if ema is not None:
            load_ema(ema, resumed[0])
        start_step = resumed[1]
        logger.info(f"resumed from {resumed[0]} at step {start_step}")
    if accelerator.is_main_process:
        os.makedirs(os.path.join(config.output_dir, "samples"), exist_ok=True)
    progress = run.begin(start_step)
    with StopRequests() as stop:
        for step in progress:
            steps.step(run, *run.generators(step))
            if ema is not None:
                ema.step(accelerator.unwrap_model(model).parameters())
            global_step = step + 1
            record = run.log_step(global_step, lr=steps.lr_scheduler.get_last_lr()[0])
            if record is not None:
                progress.set_postfix(loss=f"{record['loss']:.4f}")
                if config.log_with:
                    accelerator.log(record, step=global_step)
            if global_step % config.checkpointing_steps == 0 or global_step == config.max_train_steps:
                save_checkpoint(accelerator, config.output_dir, global_step, config.checkpoints_total_limit, ema)
            if global_step % config.sample_every == 0 and accelerator.is_main_process:
                with _ema_weights(accelerator.unwrap_model(model), ema) as weights:
                    pipe = build_pipeline(weights, steps.noise_scheduler, run.training_set, config)
                    path = os.path.join(config.output_dir, "samples", f"step-{global_step:06d}.png")
                    sample_grid(pipe, config, cfg.num_class_embeds, path)
            if stop.requested:
                return _stopped(accelerator, config, global_step, ema)

    accelerator.wait_for_everyone()
    final = None
    if accelerator.is_main_process:
        final = export_pipeline(accelerator.unwrap_model(model), ema, steps.noise_scheduler, run.training_set, config)
    run.finish(title=f"{cfg.fusion_type} on {config.dataset}")
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


def export_pipeline(unet, ema, noise_scheduler, training_set: TrainingSet, config: TrainConfig) -> str:
    """Writes `<run>/pipeline` (EMA weights, DDIM scheduler, memory = training set) and a sample grid per class."""
    run_dir = config.output_dir
    final, tmp = os.path.join(run_dir, "pipeline"), os.path.join(run_dir, "pipeline.tmp")
    with _ema_weights(unet, ema) as weights:
        pipe = build_pipeline(weights, noise_scheduler, training_set, config)
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        pipe.save_pretrained(tmp)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        sample_grid(pipe, config, pipe.unet.config.num_class_embeds, os.path.join(run_dir, "samples", "final.png"))
    logger.info(f"saved the pipeline to {final}")
    return final
