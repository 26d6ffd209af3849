"""Run configs: yaml files whose sections configure the model (and, later, training)."""

from __future__ import annotations

import inspect
import os
from typing import Any

import yaml

from .models.unet_spm import SPMUNet2DModel


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file '{path}' does not exist")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file '{path}' must hold a mapping, got {type(data).__name__}")
    return data


def model_config(path: str | os.PathLike, **overrides: Any) -> dict[str, Any]:
    """The `model:` section of a config file, with overrides, checked against `SPMUNet2DModel`'s arguments."""
    section = {**read_yaml(path).get("model", {}), **overrides}
    allowed = set(inspect.signature(SPMUNet2DModel.__init__).parameters) - {"self"}
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ValueError(f"unknown model config keys in '{path}': {unknown} (allowed: {sorted(allowed)})")
    return section


def build_unet(path: str | os.PathLike, **overrides: Any) -> SPMUNet2DModel:
    """An untrained `SPMUNet2DModel` from the `model:` section of a config file."""
    return SPMUNet2DModel(**model_config(path, **overrides))
