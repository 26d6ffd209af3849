"""Training of the classifier SPM (and of the parametric classifier), under accelerate, on the shared run
skeleton (`spm_gen.training.run`)."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed

from ..models.classifier_spm import SPMClassifier, save_classifier
from .config import ClassifierTrainConfig
from .run import TrainingRun

logger = get_logger(__name__)


def train_classifier(config: ClassifierTrainConfig) -> str | None:
    """Trains the classifier of `config`; returns `<output_dir>/classifier` on the main process.

    The folder holds the model (config.json + safetensors) and, for memory heads, its memory bank: the
    training set minus exclusions.
    """
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    set_seed(config.seed)
    model = SPMClassifier(**config.model)
    cfg = model.config
    shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    run = TrainingRun.start(config, shape, cfg.num_classes, model.uses_memory, accelerator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    progress = run.begin()
    progress.set_description("training classifier")
    for step in progress:
        generator, _ = run.generators(step)
        batch = run.draw(generator)
        with accelerator.autocast():
            if batch.support_images is None:
                logits = wrapped(batch.images)
            else:
                logits = wrapped(batch.images, batch.support_images, batch.support_labels)
        loss = F.cross_entropy(logits.float(), batch.labels)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        run.add_loss(loss)
        record = run.log_step(step + 1)
        if record is not None:
            progress.set_postfix(loss=f"{record['loss']:.4f}")
    accelerator.wait_for_everyone()
    final = None
    if accelerator.is_main_process:
        final = os.path.join(config.output_dir, "classifier")
        trained = accelerator.unwrap_model(wrapped)
        save_classifier(trained, run.training_set.memory_bank() if trained.uses_memory else None, final)
        logger.info(f"saved the classifier to {final}")
    run.finish(title=f"classifier ({cfg.head}) on {config.dataset}")
    return final
