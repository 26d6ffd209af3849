"""The skeleton every training run shares (diffusion and classifier): the accelerator, the run folder with
its config echo and loss log, per-step random streams, batch drawing with the paper's memory sampling, and
the progress bar.

Every step draws its batch, support set, permutation, noise and timesteps from generators seeded by
(seed, step, process), so a resumed run repeats exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..data import ImageDataset
from ..utils.atomic import atomic_write_text
from ..utils.progress import progress
from .config import RunConfig
from .data import TrainingSet, load_training_set
from .logs import append_loss, plot_losses, truncate_losses
from .memory_sampling import SupportSampler, nearest_table


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device).manual_seed(seed * 1_000_003 + step * 1_009 + rank)


@dataclass
class TrainingBatch:
    """One step's data on the training device: query images (uint8) and their labels, and for an SPM the
    support (memory) images (uint8) and labels, both relabelled by the batch's permutation."""

    images: torch.Tensor
    labels: torch.Tensor
    support_images: torch.Tensor | None = None
    support_labels: torch.Tensor | None = None
    # nearest-support training: `(B, k)` positions in the support of each query's neighbours (None: the paper's
    # support, read by label)
    support_groups: torch.Tensor | None = None


class TrainingRun:
    """A run of `config` under `accelerator` on `dataset` (see module docstring).

    Args:
        config: the run config (output folder, seed, batch and memory sizes, logging interval).
        accelerator: the run's `Accelerator`.
        training_set: the run's items and which of them are denoising targets (the others are memory-only).
        num_classes: the label range of the model (for the per-batch permutation).
        uses_memory: whether batches carry support images.
        neighbours: with nearest-support training, how many nearest items of its class each query reads (None:
            the paper's support).
    """

    def __init__(
        self,
        config: RunConfig,
        accelerator: Accelerator,
        training_set: TrainingSet,
        num_classes: int,
        uses_memory: bool,
        neighbours: int | None = None,
    ) -> None:
        self.config, self.accelerator, self.training_set = config, accelerator, training_set
        self.uses_memory = uses_memory
        dataset = training_set.dataset
        self.sampler = SupportSampler(dataset.labels, num_classes, training_set.targets)
        self.neighbours = None if neighbours is None else nearest_table(dataset.images, dataset.labels, neighbours)
        self.loss_log = os.path.join(config.output_dir, "loss.jsonl")
        self._running: list[torch.Tensor] = []

    @classmethod
    def start(
        cls,
        config: RunConfig,
        model_shape: tuple[int, int, int],
        num_classes: int,
        uses_memory: bool,
        accelerator: Accelerator,
        neighbours: int | None = None,
    ) -> TrainingRun:
        """Sets up logging and the run folder (config echoed as json; main process only) and loads the data
        checked against the model's image shape `(C, H, W)` and number of classes."""
        logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
        if accelerator.is_main_process:
            os.makedirs(config.output_dir, exist_ok=True)
            atomic_write_text(os.path.join(config.output_dir, "config.json"), config.to_json())
        accelerator.wait_for_everyone()
        training_set = load_training_set(config, model_shape, num_classes)
        memory_only = len(training_set.memory_only_ids)
        if memory_only:
            logging.getLogger(__name__).info("%d of %d items are memory-only", memory_only, len(training_set.dataset))
        return cls(config, accelerator, training_set, num_classes, uses_memory, neighbours)

    @property
    def dataset(self) -> ImageDataset:
        """Every item of the run (the memory), memory-only ones included."""
        return self.training_set.dataset

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def begin(self, start_step: int = 0) -> tqdm:
        """The progress bar over the steps from `start_step`; the loss log is truncated to `start_step`."""
        if self.is_main_process:
            if start_step:
                truncate_losses(self.loss_log, start_step)
            elif os.path.exists(self.loss_log):
                os.remove(self.loss_log)
        total = self.config.max_train_steps
        steps = range(start_step, total)
        return progress(steps, "training", not self.accelerator.is_local_main_process, initial=start_step, total=total)

    def generators(self, step: int) -> tuple[torch.Generator, torch.Generator]:
        """The step's random streams on the CPU (batch drawing) and on the device (noise)."""
        seed, rank = self.config.seed, self.accelerator.process_index
        return step_generator(seed, step, rank, torch.device("cpu")), step_generator(
            seed, step, rank, self.accelerator.device
        )

    def draw(self, generator: torch.Generator) -> TrainingBatch:
        """One batch of `train_batch_size` queries (with `memory_per_batch` support images for an SPM)."""
        config, device = self.config, self.accelerator.device
        groups = None
        if self.uses_memory and self.neighbours is not None:
            idx, labels, support, support_labels, groups = self.sampler.draw_nearest(
                config.train_batch_size, self.neighbours, config.permute_labels, generator
            )
        else:
            idx, labels, support, support_labels = self.sampler.draw(
                config.train_batch_size,
                config.memory_per_batch if self.uses_memory else None,
                config.permute_labels,
                generator,
            )
        images = self.dataset.images
        batch = TrainingBatch(self._augment(images[idx], generator).to(device), labels.to(device))
        if support is not None:
            support_images = self._augment(images[support], generator)
            batch.support_images, batch.support_labels = support_images.to(device), support_labels.to(device)
            batch.support_groups = None if groups is None else groups.to(device)
        return batch

    def _augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random horizontal flips (probability 1/2 each) when the config asks for them."""
        if not self.config.flip:
            return images
        flip = torch.rand(len(images), generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], images.flip(-1), images)

    def add_loss(self, loss: torch.Tensor) -> None:
        """Adds a (micro-)batch's loss to the current logging interval (kept on the device: no host
        synchronisation per step)."""
        self._running.append(loss.detach().float())

    def log_step(self, step: int, **extra: float) -> dict | None:
        """Every `log_every` steps (and at the last one), writes the interval's mean loss (averaged over
        processes) to the loss log and returns the record. Called by every process at every step."""
        if step % self.config.log_every and step != self.config.max_train_steps:
            return None
        mean = self.accelerator.gather(torch.stack(self._running).mean()[None]).mean().item()
        record = {"step": step, "loss": mean, **extra}
        self._running = []
        if self.is_main_process:
            append_loss(self.loss_log, record)
        return record

    def finish(self, title: str) -> None:
        """The loss curve (main process) and the accelerator's end."""
        if self.is_main_process:
            plot_losses(self.loss_log, os.path.join(self.config.output_dir, "loss.png"), title=title)
        self.accelerator.end_training()
