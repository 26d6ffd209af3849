"""The options of the `spm-gen` subcommands, declared once as dataclasses (`utils.dataclass_options`: each field
made with `option(...)` is one argparse option); light, so that `--help` and a refused value answer before
torch loads. `spm-gen report`'s are `ReportConfig`'s, `spm-gen serve`'s extend `ServeSettings`."""

from __future__ import annotations

from dataclasses import dataclass

from .metrics.near_copy import NEAR_COPY_RMS
from .paths import DIGITS_MODELS, MEMORIZATION_MODELS
from .reporting.config import ReportConfig
from .serving.settings import ServeSettings
from .utils.dataclass_options import option
from .utils.validation import check_values, int_option, is_integer


@dataclass
class DemoOptions:
    output: str = option("outputs/demo", help="output folder")
    models: str = option(DIGITS_MODELS, help="spm/, twin/, oracle/, judge/")
    memorization_models: str = option(
        MEMORIZATION_MODELS, help="the memorization regime's twin/, spm/, oracle_twin/, oracle_spm/, removed.json"
    )
    image_size: int = option(8, help="digit size of the memory-bank part")
    num_images: int = option(300, help="generations per model")
    steps: int = option(50, help="DDIM steps")
    seed: int = option(0, help="seed of sampling and of the removed ids")

    def check(self) -> None:
        """Raises BadValue naming the first bad value."""
        checks = {
            "image_size": is_integer(self.image_size) and self.image_size > 0,
            "num_images": is_integer(self.num_images) and self.num_images > 0,
            "steps": is_integer(self.steps) and self.steps > 0,
            "seed": 0 <= self.seed < 2**63,
        }
        positive = " (a positive integer)"
        hints = {
            "image_size": positive,
            "num_images": positive,
            "steps": positive,
            "seed": " (a torch seed: in [0, 2^63))",
        }
        check_values(self, checks, hints)


@dataclass
class CheckOptions:
    folder: str = option(help="a saved pipeline, classifier or memory bank folder", flag="folder")
    json: bool = option(False, help="print the problems as json")


@dataclass
class RemoveOptions:
    folder: str = option(help="a saved SPMDiffusionPipeline or classifier folder", flag="folder")
    ids: list[str] | None = option(None, help="item ids", one_of="what")
    ids_file: str | None = option(None, help="a file of ids (one per line, or a json list)", one_of="what")
    label: int | None = option(None, help="a whole class", flag="--class", one_of="what")
    images: list[str] | None = option(None, help="image files, matched by content hash", one_of="what")
    similar_to: list[str] | None = option(
        None, help="image files; removes items within --threshold of them", one_of="what"
    )
    threshold: float | None = option(
        None,
        help="RMS pixel distance in [0, 1]: the match distance of --similar-to, and the near-copy distance of "
        f"--verify (default {NEAR_COPY_RMS})",
    )
    verify: bool = option(
        False,
        help="after the removal, sample the classes that lost items and report for each removed image whether "
        "the model still produces it (written into the receipt)",
    )
    verify_samples: int | None = option(None, help="generations per affected class for --verify (default 64)")
    judge: str | None = option(None, help="a classifier folder: --verify also gives distances in its feature space")
    require_verified: bool = option(
        False, help="with --verify: exit with status 3 when a removed image is still produced (the removal stays)"
    )
    reason: str = option("", help="recorded in the receipt")
    dry_run: bool = option(False, help="show what would be removed; change nothing")
    output: str | None = option(None, help="write the edited model to this new folder instead of editing in place")
    wait: float = option(60.0, help="seconds to wait for another removal on the folder")


@dataclass
class ServeOptions(ServeSettings):
    """`ServeSettings` and where to listen; the token is read from --token-file or $SPM_GEN_TOKEN, never given
    as a value."""

    host: str = option("127.0.0.1", help="address to bind (loopback only by default)")
    port: int = option(8000, help="port", type=int_option(1))
    token_file: str | None = option(None, help="a file whose first line is the bearer token (else $SPM_GEN_TOKEN)")


@dataclass
class ReportOptions(ReportConfig):
    """`ReportConfig`, and a file of more ids to remove."""

    remove_ids_file: str | None = option(None, help="a file of ids to remove (one per line, or a json list)")


@dataclass
class FidOptions:
    """scripts/measure_fid.py's."""

    pipeline: str = option(help="a saved SPMDiffusionPipeline folder", flag="--pipeline")
    classifier: str = option(help="a classifier folder (scripts/train_classifier.py)", flag="--classifier")
    out: str = option(help="the output folder", flag="--out")
    num_images: int = option(500, help="generations (classes cycling)")
    exclude_classes: list[int] = option(help="removed classes (FID on the others)", nargs="*", default_factory=list)
    oracle: str | None = option(None, help="a pipeline retrained without the removed data (for FID_O)")
    steps: int = option(50, help="DDIM steps")
    seed: int = option(0, help="the sampling seed")
    batch_size: int = option(64, help="images per sampling batch")


@dataclass
class MemorizationOptions:
    """scripts/measure_memorization.py's."""

    pipeline: str = option(help="a saved SPMDiffusionPipeline folder", flag="--pipeline")
    out: str = option(help="the output folder", flag="--out")
    num_images: int = option(200, help="generations (classes cycling)")
    steps: int = option(50, help="DDIM steps")
    seed: int = option(0, help="the sampling seed")
    batch_size: int = option(64, help="images per sampling batch")
