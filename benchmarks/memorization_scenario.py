"""The memorization scenario on the digits: near-copies of particular images in samples, before and after
removal (see spm_gen/reporting/memorization_scenario.py).

(a) Trained-on duplicates: `--copies` copies of `--num-targets` training images (one per class) in the
    training data; an SPM and its twin trained on it with configs/digits.yaml for `--steps` steps. The SPM
    removes every copy from its memory; the twin runs gradient ascent on them.
(b) Memory-only images: `--memory-copies` copies of `--num-targets` test-split images (never trained on)
    added to the memory of a trained SPM (`--pipeline`, default the shipped demo SPM), then removed.

    python benchmarks/memorization_scenario.py [--steps 1000] [--copies 40] [--out runs/memorization_scenario]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict

import torch

from spm_gen.data import load_digits_dataset
from spm_gen.reporting.memorization_scenario import (
    ScenarioSettings,
    duplicates_case,
    memory_only_case,
    write_duplicated_folder,
)
from spm_gen.sampling import load_pipeline
from spm_gen.training import load_config, parse_overrides, train
from spm_gen.utils.images import to_unit_range


def one_per_class(labels: torch.Tensor, classes: list[int]) -> list[int]:
    return [int((labels == c).nonzero()[0]) for c in classes]


def report_counts(result: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        nearest = ", ".join(f"{d:.3f}" for d in result["nearest_distance"][key])
        print(f"    {key:<12} near-copies {result[key]} total {sum(result[key]):>3}; nearest sample at {nearest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps of the case (a) models")
    parser.add_argument("--copies", type=int, default=40, help="copies of each duplicated training image")
    parser.add_argument("--memory-copies", type=int, default=20, help="copies of each memory-only image")
    parser.add_argument("--classes", type=int, nargs="+", default=[0, 2, 5, 7], help="one target per class")
    parser.add_argument("--per-target", type=int, default=50, help="samples of each target's class")
    parser.add_argument("--threshold", type=float, default=0.04)
    parser.add_argument("--memory-size", type=int, default=64)
    parser.add_argument("--pipeline", default="assets/digits/spm", help="the trained SPM for case (b)")
    parser.add_argument("--out", default="runs/memorization_scenario")
    parser.add_argument("--json", default="benchmarks/memorization_scenario_cpu.json")
    parser.add_argument("--reuse", action="store_true", help="reuse the case (a) models already trained in --out")
    args = parser.parse_args()
    settings = ScenarioSettings(per_target=args.per_target, threshold=args.threshold, memory_size=args.memory_size)
    results = {
        "settings": {**vars(args), **asdict(settings)},
        "machine": f"{os.cpu_count()}-core {platform.machine()}, torch {torch.__version__}",
    }

    train_set = load_digits_dataset(image_size=16, split="train")
    picks = one_per_class(train_set.labels, args.classes)
    data_dir = os.path.join(args.out, "data")
    targets = write_duplicated_folder(train_set, [train_set.ids[i] for i in picks], args.copies, data_dir)
    dirs = {}
    for name, extra in (("spm", ["--fusion_type", "additive"]), ("twin", ["--fusion_type", "none"])):  # as measured
        if args.reuse and os.path.isdir(os.path.join(args.out, name, "pipeline")):
            dirs[name] = os.path.join(args.out, name, "pipeline")
            continue
        overrides = [
            "--output_dir",
            os.path.join(args.out, name),
            "--dataset",
            "folder",
            "--data_path",
            data_dir,
            "--max_train_steps",
            str(args.steps),
            "--sample_every",
            str(args.steps),
            "--checkpointing_steps",
            str(args.steps),
            *extra,
        ]
        start = time.perf_counter()
        dirs[name] = train(load_config("configs/digits.yaml", parse_overrides(overrides)))
        print(
            f"trained {name} on {len(train_set) + len(picks) * (args.copies - 1)} images in "
            f"{time.perf_counter() - start:.0f} s"
        )
    results["a"] = duplicates_case(
        load_pipeline(dirs["spm"]), load_pipeline(dirs["twin"]), targets, settings, os.path.join(args.out, "a")
    )

    test_set = load_digits_dataset(image_size=16, split="test")
    picks = one_per_class(test_set.labels, args.classes)
    images, labels = to_unit_range(test_set.images[picks]), test_set.labels[picks]
    results["b"] = memory_only_case(
        load_pipeline(args.pipeline),
        load_pipeline(args.pipeline),
        images,
        labels,
        args.memory_copies,
        settings,
        os.path.join(args.out, "b"),
    )

    n = args.per_target
    print(
        f"\nnear-copies (samples within {args.threshold} RMS of the target, of {n} samples of its class), "
        f"targets of classes {args.classes}"
    )
    print(f"(a) {args.copies} copies each in the training data")
    report_counts(results["a"], ("spm_before", "spm_after", "twin_before", "twin_after"))
    print(
        f"    SPM removal of {results['a']['copies_removed']} copies: {1e3 * results['a']['removal_s']:.2f} ms; "
        f"twin {settings.twin.title}: {results['a']['twin_unlearning_s']:.1f} s"
    )
    print(f"(b) {args.memory_copies} copies each added to the memory after training")
    report_counts(results["b"], ("spm_before", "spm_after", "never_added"))
    print(f"    after removal == never added, sample for sample: {results['b']['after_equals_never_added']}")
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"json: {args.json}; galleries: {args.out}/a, {args.out}/b")


if __name__ == "__main__":
    main()
