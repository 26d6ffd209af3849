"""Training of the classifier SPM (and of the parametric classifier), under accelerate."""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..data import to_memory_bank
from ..models.classifier_spm import SPMClassifier, save_classifier
from .config import ClassifierTrainConfig
from .data import load_training_dataset
from .logs import append_loss, plot_losses
from .loop import step_generator
from .memory_sampling import SupportSampler

logger = get_logger(__name__)


def train_classifier(config: ClassifierTrainConfig) -> str | None:
    """Trains the classifier of `config`; returns `<output_dir>/classifier` on the main process.

    The folder holds the model (config.json + safetensors) and, for memory heads, `memory_bank/`: the
    training set minus exclusions.
    """
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    set_seed(config.seed)
    model = SPMClassifier(**config.model)
    cfg = model.config
    dataset = load_training_dataset(config, (cfg.in_channels, cfg.image_size, cfg.image_size), cfg.num_classes)
    run_dir, device, rank = config.output_dir, accelerator.device, accelerator.process_index
    loss_log = os.path.join(run_dir, "loss.jsonl")
    if accelerator.is_main_process:
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            f.write(config.to_json())
        if os.path.exists(loss_log):
            os.remove(loss_log)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    sampler = SupportSampler(dataset.labels, cfg.num_classes)
    images_all = dataset.images
    running = []
    progress = tqdm(
        range(config.max_train_steps), desc="training classifier", disable=not accelerator.is_local_main_process
    )
    for step in progress:
        generator = step_generator(config.seed, step, rank, torch.device("cpu"))
        idx, labels, support, support_labels = sampler.draw(
            config.train_batch_size,
            config.memory_per_batch if model.uses_memory else None,
            config.permute_labels,
            generator,
        )
        images = images_all[idx].to(device).float() / 255
        with accelerator.autocast():
            if support is None:
                logits = wrapped(images)
            else:
                logits = wrapped(images, images_all[support].to(device).float() / 255, support_labels.to(device))
        loss = F.cross_entropy(logits.float(), labels.to(device))
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        running.append(accelerator.gather(loss.detach()[None]).mean().item())
        if (step + 1) % config.log_every == 0 or step + 1 == config.max_train_steps:
            record = {"step": step + 1, "loss": sum(running) / len(running)}
            running = []
            progress.set_postfix(loss=f"{record['loss']:.4f}")
            if accelerator.is_main_process:
                append_loss(loss_log, record)
    accelerator.wait_for_everyone()
    final = None
    if accelerator.is_main_process:
        final = os.path.join(run_dir, "classifier")
        trained = accelerator.unwrap_model(wrapped)
        save_classifier(trained, to_memory_bank(dataset) if trained.uses_memory else None, final)
        plot_losses(loss_log, os.path.join(run_dir, "loss.png"), title=f"classifier ({cfg.head}) on {config.dataset}")
        logger.info(f"saved the classifier to {final}")
    accelerator.end_training()
    return final
