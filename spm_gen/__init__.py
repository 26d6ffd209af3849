"""spm-gen: deep semi-parametric image models on Hugging Face diffusers.

The public names load lazily, so that `import spm_gen` (and the `spm-gen` command's help) does not import
torch and diffusers before they are needed.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "MemoryBank": ".memory",
    "PixelEncoder": ".memory",
    "RemovalReceipt": ".memory",
    "TransformersImageEncoder": ".memory",
    "MemoryFusion": ".models",
    "SPMClassifier": ".models",
    "SPMUNet2DModel": ".models",
}

__all__ = [*_LAZY, "SPMDiffusionPipeline", "__version__"]


def __getattr__(name: str):
    if name == "SPMDiffusionPipeline":  # spm_gen.pipelines: the repository's pipelines/ folder
        from .pipelines import SPMDiffusionPipeline

        return SPMDiffusionPipeline
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'spm_gen' has no attribute {name!r}")
