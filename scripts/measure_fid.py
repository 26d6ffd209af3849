"""FID of a saved SPM pipeline's samples (remaining classes) against the digits test split, and FID_O
against an oracle retrained without the removed data; features from a trained classifier (domain FID).

    accelerate launch scripts/measure_fid.py --pipeline P --classifier C --out outputs/fid \
        [--exclude-classes 3] [--oracle O]
"""

from __future__ import annotations

import argparse
import json
import sys

from spm_gen.cli import guarded
from spm_gen.cli_options import FidOptions
from spm_gen.paths import check_model_folder, check_pipeline_folder
from spm_gen.utils.dataclass_options import add_options, from_options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser, FidOptions)
    args = from_options(FidOptions, parser.parse_args(argv))
    check_pipeline_folder(args.pipeline, "--pipeline")  # before torch and diffusers load (seconds)
    check_model_folder(args.classifier, "--classifier")
    if args.oracle is not None:
        check_pipeline_folder(args.oracle, "--oracle")
    from spm_gen.metric_runs import measure_fid

    result = measure_fid(
        args.pipeline,
        args.classifier,
        args.out,
        args.num_images,
        args.exclude_classes,
        args.oracle,
        args.steps,
        args.seed,
        args.batch_size,
    )
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))  # bad input: one `error: ...` line and exit 2, as `spm-gen`
