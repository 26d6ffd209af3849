#!/usr/bin/env bash
# Trains the four digits models `make demo` loads: the SPM, its parametric twin, the oracle twin retrained
# without class 3, and the judge classifier SPM. `make demo-train` runs this into runs/demo_models and
# then the demo on them; the models shipped under assets/digits/ were made by exactly this script
# (`bash scripts/train_demo_models.sh assets/digits`), then pruned to their pipeline/ and classifier folders.
set -euo pipefail
OUT=${1:-runs/demo_models}
STEPS=${STEPS:-2000}
PY=${PYTHON:-python}
common=(--max_train_steps "$STEPS" --sample_every "$STEPS" --checkpointing_steps "$STEPS")
$PY scripts/train.py --config configs/digits.yaml --output_dir "$OUT/spm_run" "${common[@]}"
$PY scripts/train.py --config configs/digits.yaml --output_dir "$OUT/twin_run" --fusion_type none "${common[@]}"
$PY scripts/train.py --config configs/digits.yaml --output_dir "$OUT/oracle_twin_run" --fusion_type none \
  --exclude_classes 3 "${common[@]}"
$PY scripts/train_classifier.py --config configs/digits_classifier.yaml --output_dir "$OUT/judge_run"
