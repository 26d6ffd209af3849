"""spm-gen: deep semi-parametric image models on Hugging Face diffusers."""

from .memory import MemoryBank, PixelEncoder, RemovalReceipt, TransformersImageEncoder
from .models import MemoryFusion, SPMClassifier, SPMUNet2DModel

__version__ = "0.1.0"

__all__ = [
    "MemoryBank",
    "MemoryFusion",
    "PixelEncoder",
    "RemovalReceipt",
    "SPMClassifier",
    "SPMDiffusionPipeline",
    "SPMUNet2DModel",
    "TransformersImageEncoder",
    "__version__",
]


def __getattr__(name: str):
    # the pipeline lives in the top-level `pipelines` package, which imports spm_gen itself
    if name == "SPMDiffusionPipeline":
        from pipelines import SPMDiffusionPipeline

        return SPMDiffusionPipeline
    raise AttributeError(f"module 'spm_gen' has no attribute {name!r}")
