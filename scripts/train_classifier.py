"""Train the classifier SPM (or, with --head linear, the parametric classifier) under accelerate.

accelerate launch scripts/train_classifier.py --config configs/digits_classifier.yaml [--key value ...]
"""

from __future__ import annotations

import argparse
import sys

from spm_gen.training import ClassifierTrainConfig, configure
from spm_gen.training.classifier_loop import train_classifier


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a classifier SPM or the parametric classifier.")
    parser.add_argument("--config", required=True, help="a yaml config, e.g. configs/digits_classifier.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config as json and exit")
    args, rest = parser.parse_known_args(argv)
    config = configure(args.config, rest, ClassifierTrainConfig, args.dry_run)
    if config is not None:
        train_classifier(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
