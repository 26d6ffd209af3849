"""Settings of `spm-gen report`: what to remove, which models to compare, how much to sample."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from ..choices import EmptyMemory, check_choice
from ..metrics.near_copy import NEAR_COPY_RMS
from ..unlearning.twin import TwinUnlearning
from ..utils.dataclass_options import option
from ..utils.validation import check_values, is_guidance_scale


@dataclass
class ReportConfig:
    """The settings of `spm-gen report` (its options are these fields: `spm-gen report --help`)."""

    pipeline_dir: str = option(help="a saved SPMDiffusionPipeline folder (the SPM, with its memory)", flag="PIPELINE")
    output_dir: str = option("outputs/report", help="the report folder", flag="--output")
    remove_classes: list[int] = option(
        help="a class to remove (repeatable)", flag="--remove-class", action="append", default_factory=list
    )
    remove_ids: list[str] = option(help="item ids to remove", default_factory=list)
    classifier_dir: str | None = option(
        None, help="the judge classifier folder (UA and the FID features; skipped without it)", flag="--classifier"
    )
    oracle_dir: str | None = option(None, help="a pipeline retrained without the removed data (FID_O)", flag="--oracle")
    twin_dir: str | None = option(
        None, help="the parametric twin's pipeline, unlearned for comparison (--twin-method)", flag="--twin"
    )
    num_images: int = option(500, help="generations per model, classes cycling")
    num_inference_steps: int = option(50, help="DDIM steps", flag="--steps")
    guidance_scale: float | None = option(
        None, help="guidance w of every model (default: each model's own, saved with it as default_guidance_scale)"
    )
    memory_size: int | None = option(64, help="memory items read per class")
    empty_memory: EmptyMemory = option(
        "all", help="what samples of a class with no memory left read: all memory, or an error"
    )
    near_copy_threshold: float = option(NEAR_COPY_RMS, help="near-copy RMS pixel distance", flag="--threshold")
    twin: TwinUnlearning = field(default_factory=TwinUnlearning)  # its options: --twin-method, --twin-steps, ...
    compile_fusion: bool = option(False, help="compile the SPM's additive fusion (on a CPU: the native kernel)")
    gallery_size: int = option(6, help="removed images each gallery shows")
    batch_size: int = option(100, help="images per sampling batch")
    seed: int = option(0, help="seed of sampling and of the twin's unlearning")

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
                "gallery_size": self.gallery_size > 0,
                "seed": 0 <= self.seed < 2**63,  # a torch generator's seed
            },
            {
                "remove_classes": ": give classes and/or ids to remove",
                "near_copy_threshold": " (an RMS pixel distance in (0, 1])",
            },
        )
        self.twin.check()
        check_choice("empty_memory", self.empty_memory, EmptyMemory)
        from ..memory.saved_folder import check_output_outside

        check_output_outside(self.pipeline_dir, self.output_dir)
        for key in ("pipeline_dir", "classifier_dir", "oracle_dir", "twin_dir"):
            path = getattr(self, key)
            if path is not None and not os.path.isdir(path):
                raise FileNotFoundError(f"{key} '{path}' is not a folder")

    def to_dict(self) -> dict:
        return asdict(self)
