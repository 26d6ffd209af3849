"""Models: the memory fusion and the SPM denoiser."""

from .fusion import MemoryFusion
from .unet_spm import SPMUNet2DModel

__all__ = ["MemoryFusion", "SPMUNet2DModel"]
