"""Settings of `spm-gen report`: what to remove, which models to compare, how much to sample."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from ..choices import EmptyMemory, check_choice
from ..memory.saved_folder import check_output_outside
from ..unlearning.twin import TwinUnlearning
from ..utils.validation import check_values, is_guidance_scale


@dataclass
class ReportConfig:
    pipeline_dir: str  # the SPM (a saved SPMDiffusionPipeline with its memory)
    output_dir: str = "outputs/report"
    remove_classes: list[int] = field(default_factory=list)
    remove_ids: list[str] = field(default_factory=list)
    classifier_dir: str | None = None  # the judge: UA and the FID features (FID/UA are skipped without it)
    oracle_dir: str | None = None  # a pipeline retrained without the removed data: FID_O
    twin_dir: str | None = None  # the parametric twin (fusion_type none), unlearned as `twin` says
    num_images: int = 500  # generations per model, classes cycling
    num_inference_steps: int = 50
    guidance_scale: float | None = None  # None: each model's own (its saved default_guidance_scale)
    memory_size: int | None = 64  # memory items each class reads while sampling (None: all)
    empty_memory: EmptyMemory = "all"  # what a removed class's samples read: all memory, or an error
    near_copy_threshold: float = 0.04  # RMS pixel distance; digits: 99.9% of training images are farther apart
    twin: TwinUnlearning = field(default_factory=TwinUnlearning)
    compile_fusion: bool = False  # torch.compile the SPM's additive score (faster sampling after a compile)
    gallery_size: int = 6
    batch_size: int = 100
    seed: int = 0

    def check(self) -> None:
        """Raises ValueError naming the first bad value (before anything is loaded or sampled)."""
        check_values(
            self,
            {
                "remove_classes": bool(self.remove_classes or self.remove_ids),
                "num_images": self.num_images > 0,
                "num_inference_steps": self.num_inference_steps > 0,
                "guidance_scale": self.guidance_scale is None or is_guidance_scale(self.guidance_scale),
                "memory_size": self.memory_size is None or self.memory_size > 0,
                "near_copy_threshold": 0 < self.near_copy_threshold <= 1,
                "batch_size": self.batch_size > 0,
            },
            {
                "remove_classes": ": give classes and/or ids to remove",
                "near_copy_threshold": " (an RMS pixel distance in (0, 1])",
            },
        )
        self.twin.check()
        check_choice("empty_memory", self.empty_memory, EmptyMemory)
        check_output_outside(self.pipeline_dir, self.output_dir)
        for key in ("pipeline_dir", "classifier_dir", "oracle_dir", "twin_dir"):
            path = getattr(self, key)
            if path is not None and not os.path.isdir(path):
                raise FileNotFoundError(f"{key} '{path}' is not a folder")

    def to_dict(self) -> dict:
        return asdict(self)
