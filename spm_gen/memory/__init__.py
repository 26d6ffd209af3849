"""The memory core shared by the generator and the classifier."""

from .bank import MemoryBank
from .encoders import PixelEncoder, TransformersImageEncoder
from .items import ItemSelection
from .nearest import NearestResult
from .receipts import RemovalReceipt

__all__ = ["ItemSelection", "MemoryBank", "NearestResult", "PixelEncoder", "RemovalReceipt", "TransformersImageEncoder"]
