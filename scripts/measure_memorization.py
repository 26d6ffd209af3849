"""Memorization of a saved SPM pipeline's samples against its memory (the training set).

accelerate launch scripts/measure_memorization.py --pipeline runs/digits/pipeline --out outputs/mem [--num-images 200]
"""

from __future__ import annotations

import argparse
import json
import sys

from spm_gen.cli import guarded
from spm_gen.cli_options import MemorizationOptions
from spm_gen.paths import check_pipeline_folder
from spm_gen.utils.dataclass_options import add_options, from_options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser, MemorizationOptions)
    args = from_options(MemorizationOptions, parser.parse_args(argv))
    check_pipeline_folder(args.pipeline, "--pipeline")  # before torch and diffusers load (seconds)
    from spm_gen.metric_runs import measure_memorization

    result = measure_memorization(args.pipeline, args.out, args.num_images, args.steps, args.seed, args.batch_size)
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))  # bad input: one `error: ...` line and exit 2, as `spm-gen`
