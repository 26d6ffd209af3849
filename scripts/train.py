"""Train an SPM (or its parametric twin) under accelerate.

    accelerate launch scripts/train.py --config configs/digits.yaml [--key value ...]
    python scripts/train.py --config configs/tiny.yaml --output_dir runs/x --max_train_steps 200 --exclude_classes 3
    python scripts/train.py --config configs/digits.yaml --dry-run     # print the resolved config and exit

Overrides use the config's own key names; model arguments too (`--fusion_type none` or `--model.fusion_type none`).
"""

from __future__ import annotations

import sys

from spm_gen.cli import guarded
from spm_gen.training.config import TrainConfig, script_main


def main(argv: list[str] | None = None) -> int:
    return script_main(argv, "Train an SPM or its parametric twin.", TrainConfig)


if __name__ == "__main__":
    sys.exit(guarded(main))  # bad input: one `error: ...` line and exit 2, as `spm-gen`
