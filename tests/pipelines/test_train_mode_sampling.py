"""Sampling and prediction are deterministic, and removal exact, when the model is in training mode (dropout
active), as after `SPMUNet2DModel(...)` or inside a training run: memory features are never computed with
dropout or batch statistics, and the cache never serves features of another mode."""

import pytest
import torch
from diffusers import DDIMScheduler

from spm_gen import MemoryBank, SPMClassifier, SPMDiffusionPipeline
from tests.conftest import make_images
from tests.tiny import sample, tiny_memory, tiny_unet


def _pipeline(encoding: str, bank: MemoryBank) -> SPMDiffusionPipeline:
    unet = tiny_unet(dropout=0.1, memory_encoding=encoding).train()
    pipe = SPMDiffusionPipeline(unet, DDIMScheduler(num_train_timesteps=100), bank)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("encoding", ["clean", "paper"])
def test_a_unet_in_train_mode_samples_deterministically_and_removes_exactly(encoding):
    images, labels = tiny_memory()
    a = _pipeline(encoding, MemoryBank.from_images(images, labels))
    b = _pipeline(encoding, MemoryBank.from_images(images, labels))
    assert a.unet.training and torch.equal(sample(a), sample(b))
    assert a.unet.training  # sampling left the mode as it was
    gone = ["0", "5"]  # classes 0 and 1 lose an item each; 2 and 3 lose nothing
    a.memory_bank.remove(ids=gone)
    keep = [i for i in range(len(images)) if str(i) not in gone]
    never = _pipeline(encoding, MemoryBank.from_images(images[keep], labels[keep], [str(i) for i in keep]))
    assert torch.equal(sample(a), sample(never))


def test_a_classifier_in_train_mode_reads_eval_mode_features():
    torch.manual_seed(0)
    model = SPMClassifier(image_size=8, stage_channels=(8,), blocks_per_stage=(1,), embed_dim=6)
    bank = MemoryBank.from_images(make_images(12), torch.arange(12) % 3)
    model.train()
    sums_in_training = model.class_sums(bank)[0].clone()
    assert model.training
    model.eval()
    fresh = SPMClassifier.from_config(model.config)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(sums_in_training, fresh.eval().class_sums(bank)[0])
