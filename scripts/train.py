"""Train an SPM (or its parametric twin) under accelerate.

    accelerate launch scripts/train.py --config configs/digits.yaml [--key value ...]
    python scripts/train.py --config configs/tiny.yaml --output_dir runs/x --max_train_steps 200 --exclude_classes 3
    python scripts/train.py --config configs/digits.yaml --dry-run     # print the resolved config and exit

Overrides use the config's own key names; model arguments too (`--fusion_type none` or `--model.fusion_type none`).
"""

from __future__ import annotations

import argparse
import sys

from spm_gen.training import TrainConfig, configure, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train an SPM or its parametric twin.")
    parser.add_argument("--config", required=True, help="a yaml config, e.g. configs/digits.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config as json and exit")
    args, rest = parser.parse_known_args(argv)
    config = configure(args.config, rest, TrainConfig, args.dry_run)
    if config is not None:
        train(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
