"""The memory core shared by the generator and the classifier."""

from .bank import MemoryBank, NearestResult
from .encoders import PixelEncoder, TransformersImageEncoder
from .receipts import RemovalReceipt

__all__ = ["MemoryBank", "NearestResult", "PixelEncoder", "RemovalReceipt", "TransformersImageEncoder"]
