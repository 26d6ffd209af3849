"""How the twin's unlearning methods trade forgetting against quality on the demo's removal.

The shipped digits twin (assets/digits/twin) forgets class 3 and 20 seeded other training images (the
demo's removal) with gradient ascent and with SalUn's random-label fine-tuning at several settings; each
result is sampled (`--num-images`, classes cycling, 50 DDIM steps) and measured with the report's measures:
UA on class-3 generations and FID of the remaining classes (judge features, against the training images).

    python benchmarks/twin_unlearning.py [--num-images 100]
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from spm_gen.demo import individual_removals
from spm_gen.memory.saved_folder import SavedFolder
from spm_gen.metrics.near_copy import NEAR_COPY_RMS
from spm_gen.models.classifier_spm import load_classifier
from spm_gen.paths import DIGITS_MODELS
from spm_gen.reporting.comparison import SamplingPlan
from spm_gen.reporting.measures import plain, table
from spm_gen.reporting.report_rows import Judge, RemovedData, RowContext, fid_references, report_row
from spm_gen.reporting.sampling_settings import SamplingSettings
from spm_gen.sampling import load_pipeline
from spm_gen.unlearning.twin import TwinUnlearning, forget_and_remain
from spm_gen.utils.benchmarking import RunFolderOptions, describe_machine, parse_options, write_json
from spm_gen.utils.dataclass_options import option

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


COLUMNS = plain("method", "steps", "lr", "remain_weight", "seconds", "ua", "fid_remaining")


@dataclass
class Options(RunFolderOptions):
    json: str | None = option("benchmarks/twin_unlearning_cpu.json", help="write the numbers and settings here")
    models: str = option(DIGITS_MODELS, help="the folder of the digits models (spm/, twin/, judge/)")
    num_images: int = option(100, help="generations per unlearning setting (classes cycling)")
    inference_steps: int = option(50, help="DDIM steps")
    max_steps: int | None = option(None, help="cap every setting's unlearning steps")
    one_per_method: bool = option(False, help="only the first setting of each method")


def main(argv: list[str] | None = None) -> list[dict]:
    tiny = {"num_images": 30, "inference_steps": 2, "max_steps": 2, "one_per_method": True}
    args = parse_options(Options, argv, __doc__, tiny)
    training = SavedFolder(os.path.join(args.models, "spm")).load_bank()
    ids = training.resolve_ids(ids=individual_removals(training, 3, 20), labels=[3])  # the demo's removal
    removed = RemovedData(ids, training.get_images(ids), training.get_labels(ids), [3])
    forget, remain = forget_and_remain(training, ids)
    judge = Judge(*load_classifier(os.path.join(args.models, "judge")))
    twin = load_pipeline(os.path.join(args.models, "twin"))
    labels = [i % 10 for i in range(args.num_images)]
    plan = SamplingPlan(labels, args.out, SamplingSettings(num_inference_steps=args.inference_steps, batch_size=64))
    references = fid_references(training, removed, os.path.join(args.out, "fid"))
    context = RowContext(training, removed, os.path.join(args.out, "fid"), NEAR_COPY_RMS, judge, references)
    rows = []
    settings = [
        s for i, s in enumerate(SETTINGS) if not args.one_per_method or s[0] not in {t[0] for t in SETTINGS[:i]}
    ]
    for method, steps, lr, weight in settings:
        steps = min(steps, args.max_steps or steps)
        unlearning = TwinUnlearning(method, steps, lr, weight, saliency=0.5)
        pipe, seconds = (twin, 0.0) if method == "none" else unlearning.apply(twin, forget, remain, seed=0)
        folder = os.path.join(args.out, f"{method}_{steps}_{lr}_{weight}")
        gen = plan.sample(method, pipe, folder)
        row, _ = report_row(gen, context)
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
        print(rows[-1], flush=True)
    print(table(rows, COLUMNS))
    write_json(args.json, {"num_images": args.num_images, "saliency": 0.5, "machine": describe_machine(), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
