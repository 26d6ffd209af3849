"""spm-gen: deep semi-parametric image models on Hugging Face diffusers."""

from .memory import MemoryBank, PixelEncoder, RemovalReceipt, TransformersImageEncoder

__version__ = "0.1.0"

__all__ = ["MemoryBank", "PixelEncoder", "RemovalReceipt", "TransformersImageEncoder", "__version__"]
