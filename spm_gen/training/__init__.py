"""Training: the typed config, the paper's memory sampling, the loss, checkpoints and the loop.

The loop loads lazily: the config module is light, so that a config's errors come before torch and diffusers
load (`spm-gen train` and scripts/train.py check a config in under a second).
"""

from __future__ import annotations

from .config import ClassifierTrainConfig, TrainConfig, configure, load_config, parse_overrides

__all__ = ["ClassifierTrainConfig", "TrainConfig", "configure", "load_config", "parse_overrides", "train"]


def __getattr__(name: str):
    if name == "train":
        from .loop import train

        return train
    raise AttributeError(f"module 'spm_gen.training' has no attribute {name!r}")
