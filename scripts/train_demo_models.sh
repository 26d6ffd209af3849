#!/usr/bin/env bash
# Trains the four digits models the demo loads: the SPM, its parametric twin, the twin retrained without
# class 3 (the oracle) and the judge classifier SPM, then lays them out as DIR/spm, twin, oracle, judge.
# `make demo-train` runs this into runs/demo_models and the demo on them. The SPM, twin and oracle shipped
# in assets/digits/ were made by these command lines at the default 4,000 steps; the judge is kept from an
# earlier run of this script (assets/digits/README.md).
set -euo pipefail
OUT=${1:-runs/demo_models}
STEPS=${STEPS:-4000}
PY=${PYTHON:-python}
common=(--max_train_steps "$STEPS" --sample_every "$STEPS" --checkpointing_steps "$STEPS")
$PY scripts/train.py --config configs/digits.yaml --output_dir "$OUT/spm_run" "${common[@]}"
$PY scripts/train.py --config configs/digits.yaml --output_dir "$OUT/twin_run" --fusion_type none "${common[@]}"
$PY scripts/train.py --config configs/digits.yaml --output_dir "$OUT/oracle_twin_run" --fusion_type none \
  --exclude_classes 3 "${common[@]}"
$PY scripts/train_classifier.py --config configs/digits_classifier.yaml --output_dir "$OUT/judge_run"
for pair in spm:spm_run/pipeline twin:twin_run/pipeline oracle:oracle_twin_run/pipeline judge:judge_run/classifier; do
  rm -rf "${OUT:?}/${pair%%:*}"
  cp -r "$OUT/${pair#*:}" "$OUT/${pair%%:*}"
done
