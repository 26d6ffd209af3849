"""The memory core shared by the generator and the classifier."""

from .bank import MemoryBank
from .encoders import PixelEncoder, TransformersImageEncoder
from .receipts import RemovalReceipt
from .search import NearestResult

__all__ = ["MemoryBank", "NearestResult", "PixelEncoder", "RemovalReceipt", "TransformersImageEncoder"]
