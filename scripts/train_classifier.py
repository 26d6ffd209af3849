"""Train the classifier SPM (or, with --head linear, the parametric classifier) under accelerate.

accelerate launch scripts/train_classifier.py --config configs/digits_classifier.yaml [--key value ...]
"""

from __future__ import annotations

import sys

from spm_gen.cli import guarded
from spm_gen.training.config import ClassifierTrainConfig, script_main


def main(argv: list[str] | None = None) -> int:
    description = "Train a classifier SPM or the parametric classifier."
    return script_main(argv, description, ClassifierTrainConfig)


if __name__ == "__main__":
    sys.exit(guarded(main))  # bad input: one `error: ...` line and exit 2, as `spm-gen`
