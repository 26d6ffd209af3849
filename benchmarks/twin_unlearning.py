"""How the twin's unlearning methods trade forgetting against quality on the demo's removal.

The shipped digits twin (assets/digits/twin) forgets class 3 and 20 seeded other training images (the
demo's removal) with gradient ascent and with SalUn's random-label fine-tuning at several settings; each
result is sampled (`--num-images`, classes cycling, 50 DDIM steps) and measured with the report's measures:
UA on class-3 generations and FID of the remaining classes (judge features, against the training images).

    python benchmarks/twin_unlearning.py [--num-images 100]
"""

from __future__ import annotations

import argparse
import json
import os

from spm_gen.demo import individual_removals
from spm_gen.memory.saved_folder import SavedFolder
from spm_gen.models.classifier_spm import load_classifier
from spm_gen.paths import DIGITS_MODELS
from spm_gen.reporting.generations import sample_generations
from spm_gen.reporting.measures import Judge, RemovedData, fid_references, measure_row
from spm_gen.sampling import load_pipeline
from spm_gen.unlearning.twin import TwinUnlearning, forget_and_remain

# (method, steps, lr, remain_weight)
SETTINGS = [
    ("none", 0, 0.0, 0.0),
    ("gradient_ascent", 20, 1e-5, 1.0),
    ("gradient_ascent", 40, 1e-5, 1.0),
    ("gradient_ascent", 100, 1e-5, 1.0),
    ("gradient_ascent", 100, 3e-5, 5.0),
    ("gradient_ascent", 100, 5e-5, 5.0),
    ("random_label", 100, 1e-4, 1.0),
    ("random_label", 100, 3e-4, 1.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DIGITS_MODELS)
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--out", default="runs/twin_unlearning")
    parser.add_argument("--json", default="benchmarks/twin_unlearning_cpu.json")
    args = parser.parse_args()
    training = SavedFolder(os.path.join(args.models, "spm")).load_bank()
    ids = training.resolve_ids(ids=individual_removals(training, 3, 20), labels=[3])  # the demo's removal
    removed = RemovedData(ids, training.get_images(ids), training.get_labels(ids), [3])
    forget, remain = forget_and_remain(training, ids)
    judge = Judge(*load_classifier(os.path.join(args.models, "judge")))
    twin = load_pipeline(os.path.join(args.models, "twin"))
    labels = [i % 10 for i in range(args.num_images)]
    references = fid_references(training, removed, os.path.join(args.out, "fid"))
    rows = []
    print(f"{'method':<16} {'steps':>5} {'lr':>7} {'remain w':>8} {'seconds':>8} {'UA':>6} {'FID':>8}")
    for method, steps, lr, weight in SETTINGS:
        unlearning = TwinUnlearning(method, steps, lr, weight, saliency=0.5)
        pipe, seconds = (twin, 0.0) if method == "none" else unlearning.apply(twin, forget, remain, seed=0)
        gen = sample_generations(method, pipe, labels, os.path.join(args.out, f"{method}_{steps}_{lr}_{weight}"), 0)
        row, _ = measure_row(gen, training, removed, os.path.join(args.out, "fid"), 0.04, judge, references)
        rows.append(
            {
                "method": method,
                "steps": steps,
                "lr": lr,
                "remain_weight": weight,
                "seconds": seconds,
                "ua": row["ua"],
                "fid_remaining": row["fid_remaining"],
            }
        )
        print(
            f"{method:<16} {steps:>5} {lr:>7.0e} {weight:>8} {seconds:>8.1f} {row['ua']:>6.1f} "
            f"{row['fid_remaining']:>8.2f}",
            flush=True,
        )
    with open(args.json, "w") as f:
        json.dump({"num_images": args.num_images, "saliency": 0.5, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
