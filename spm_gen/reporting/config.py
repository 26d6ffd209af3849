"""Settings of `spm-gen report`: what to remove, which models to compare, how much to sample."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from ..metrics.near_copy import NEAR_COPY_RMS
from ..unlearning.twin import TwinUnlearning
from ..utils.dataclass_options import option
from ..utils.validation import check_values
from .sampling_settings import SamplingSettings


@dataclass
class ReportConfig(SamplingSettings):
    """The settings of `spm-gen report` (its options are these fields and the sampling settings': `spm-gen
    report --help`)."""

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
    memory_size: int | None = option(64, help="memory items read per class", kw_only=True)
    near_copy_threshold: float = option(NEAR_COPY_RMS, help="near-copy RMS pixel distance", flag="--threshold")
    twin: TwinUnlearning = field(default_factory=TwinUnlearning)  # its options: --twin-method, --twin-steps, ...
    compile_fusion: bool = option(False, help="compile the SPM's additive fusion (on a CPU: the native kernel)")
    gallery_size: int = option(6, help="removed images each gallery shows")
    seed: int = option(0, help="seed of sampling and of the twin's unlearning", kw_only=True)

    def check(self) -> None:
        """Raises ValueError naming the first bad value (before anything is loaded or sampled)."""
        check_values(
            self,
            {
                "remove_classes": bool(self.remove_classes or self.remove_ids),
                "num_images": self.num_images > 0,
                "near_copy_threshold": 0 < self.near_copy_threshold <= 1,
                "gallery_size": self.gallery_size > 0,
            },
            {
                "remove_classes": ": give classes and/or ids to remove",
                "near_copy_threshold": " (an RMS pixel distance in (0, 1])",
            },
        )
        self.check_sampling()
        self.twin.check()
        from ..memory.saved_folder import check_output_outside

        check_output_outside(self.pipeline_dir, self.output_dir)
        for key in ("pipeline_dir", "classifier_dir", "oracle_dir", "twin_dir"):
            path = getattr(self, key)
            if path is not None and not os.path.isdir(path):
                raise FileNotFoundError(f"{key} '{path}' is not a folder")

    def to_dict(self) -> dict:
        return asdict(self)
