"""Models: the memory fusion and the SPM denoiser."""

from .classifier_spm import SPMClassifier
from .fusion import MemoryFusion
from .unet_spm import SPMUNet2DModel

__all__ = ["MemoryFusion", "SPMClassifier", "SPMUNet2DModel"]
