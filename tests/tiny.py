"""Tiny models for tests: a unet from configs/tiny.yaml, a memory of random digits-size images, a pipeline."""

import torch
from diffusers import DDIMScheduler

from spm_gen import MemoryBank, SPMDiffusionPipeline
from spm_gen.training.config import build_unet
from tests.conftest import make_images

TINY = "configs/tiny.yaml"


def tiny_unet(**overrides):
    torch.manual_seed(0)
    return build_unet(TINY, **{"num_class_embeds": 4, **overrides})


def tiny_memory(count: int = 24, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    return make_images(count, seed=seed), torch.arange(count) % 4


def tiny_pipeline(bank: MemoryBank | None = None, **overrides) -> SPMDiffusionPipeline:
    if bank is None:
        bank = MemoryBank.from_images(*tiny_memory())
    pipe = SPMDiffusionPipeline(tiny_unet(**overrides), DDIMScheduler(num_train_timesteps=100), bank)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe, seed: int = 0, **kwargs) -> torch.Tensor:
    # guided, so both branches of classifier-free guidance run (the pipeline's default w is 0)
    args = dict(
        class_labels=[0, 1, 2, 3, 1], num_inference_steps=2, memory_size=3, guidance_scale=0.3, output_type="pt"
    )
    args.update(kwargs)
    return pipe(generator=torch.Generator().manual_seed(seed), **args).images


def read_items(readout) -> list[list[int]]:
    """The items each query of a readout reads, in query order."""
    out = {}
    for groups in readout.sets:
        for row, group in zip(groups.rows.tolist(), groups.group.tolist()):
            out[row] = groups.items[group][groups.valid[group]].tolist()
    return [out[q] for q in sorted(out)]
