"""The memorization scenario on the digits: near-copies of particular images in samples, before and after
removal (see experiments/memorization_scenario.py).

(a) Trained-on duplicates: `--copies` copies of `--num-targets` training images (one per class) in the
    training data; an SPM and its twin trained on it with configs/digits.yaml for `--steps` steps. The SPM
    removes every copy from its memory; the twin runs gradient ascent on them.
(b) Memory-only images: `--memory-copies` copies of `--num-targets` test-split images (never trained on)
    added to the memory of a trained SPM (`--pipeline`, default the shipped demo SPM), then removed.

    python benchmarks/memorization_scenario.py [--steps 1000] [--copies 40] [--out runs/memorization_scenario]
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # experiments/

from experiments.memorization_scenario import (
    ScenarioSettings,
    duplicates_case,
    memory_only_case,
    write_duplicated_folder,
)
from spm_gen.data import load_digits_dataset
from spm_gen.reporting.roles import Role
from spm_gen.sampling import load_pipeline
from spm_gen.training import load_config, train
from spm_gen.training.config import run_length
from spm_gen.unlearning.twin import TwinUnlearning
from spm_gen.utils.benchmarking import RunFolderOptions, describe_machine, parse_options, recorded_settings, write_json
from spm_gen.utils.dataclass_options import nested_settings, option
from spm_gen.utils.images import to_unit_range


def one_per_class(labels: torch.Tensor, classes: list[int]) -> list[int]:
    return [int((labels == c).nonzero()[0]) for c in classes]


def report_counts(result: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        nearest = ", ".join(f"{d:.3f}" for d in result["nearest_distance"][key])
        print(f"    {key:<12} near-copies {result[key]} total {sum(result[key]):>3}; nearest sample at {nearest}")


@dataclass
class Options(RunFolderOptions):
    json: str | None = option("benchmarks/memorization_scenario_cpu.json", help="write the numbers and settings here")
    config: str = option("configs/digits.yaml", help="the training config of the case (a) models")
    steps: int = option(1000, help="training steps of the case (a) models")
    copies: int = option(40, help="copies of each duplicated training image")
    memory_copies: int = option(20, help="copies of each memory-only image")
    classes: list[int] = option(help="one target per class", default_factory=lambda: [0, 2, 5, 7])
    pipeline: str | None = option("assets/digits/spm", help="the trained SPM for case (b) (--tiny: (a)'s)")
    reuse: bool = option(False, help="reuse the case (a) models already trained in --out")
    settings: ScenarioSettings = nested_settings(ScenarioSettings)


TINY = {"config": "configs/tiny.yaml", "steps": 2, "copies": 2, "memory_copies": 2, "classes": [0, 2], "pipeline": None}
TINY |= {"per_target": 2, "num_inference_steps": 2, "twin": TwinUnlearning(steps=2)}


def parse_args(argv: list[str] | None = None) -> Options:
    return parse_options(Options, argv, __doc__, TINY)


def train_case_a(args: Options, data_dir: str, num_images: int) -> dict[str, str]:
    """The SPM and the twin trained on the duplicated folder (reused from --out with --reuse)."""
    dirs = {}
    for name, fusion in (("spm", "additive"), ("twin", "none")):  # as measured
        if args.reuse and os.path.isdir(os.path.join(args.out, name, "pipeline")):
            dirs[name] = os.path.join(args.out, name, "pipeline")
            continue
        overrides = {"output_dir": os.path.join(args.out, name), "dataset": "folder", "data_path": data_dir}
        overrides |= {**run_length(args.steps), "fusion_type": fusion}
        start = time.perf_counter()
        dirs[name] = train(load_config(args.config, overrides))
        print(f"trained {name} on {num_images} images in {time.perf_counter() - start:.0f} s")
    return dirs


def print_results(args: Options, results: dict, settings: ScenarioSettings) -> None:
    n = args.settings.per_target
    print(
        f"\nnear-copies (samples within {args.settings.threshold} RMS of the target, of {n} samples of its class), "
        f"targets of classes {args.classes}"
    )
    print(f"(a) {args.copies} copies each in the training data")
    report_counts(results["a"], (Role.SPM_BEFORE, Role.SPM_AFTER, Role.TWIN_BEFORE, Role.TWIN_AFTER))
    print(
        f"    SPM removal of {results['a']['copies_removed']} copies: {1e3 * results['a']['removal_s']:.2f} ms; "
        f"twin {settings.twin.title}: {results['a']['twin_unlearning_s']:.1f} s"
    )
    print(f"(b) {args.memory_copies} copies each added to the memory after training")
    report_counts(results["b"], (Role.SPM_BEFORE, Role.SPM_AFTER, Role.NEVER_ADDED))
    print(f"    after removal == never added, sample for sample: {results['b']['after_equals_never_added']}")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    settings = args.settings
    results = {"settings": recorded_settings(args), "machine": describe_machine()}
    image_size = load_config(args.config).image_size
    train_set = load_digits_dataset(image_size=image_size, split="train")
    picks = one_per_class(train_set.labels, args.classes)
    data_dir = os.path.join(args.out, "data")
    targets = write_duplicated_folder(train_set, [train_set.ids[i] for i in picks], args.copies, data_dir)
    dirs = train_case_a(args, data_dir, len(train_set) + len(picks) * (args.copies - 1))
    results["a"] = duplicates_case(
        load_pipeline(dirs["spm"]), load_pipeline(dirs["twin"]), targets, settings, os.path.join(args.out, "a")
    )

    test_set = load_digits_dataset(image_size=image_size, split="test")
    picks = one_per_class(test_set.labels, args.classes)
    images, labels = to_unit_range(test_set.images[picks]), test_set.labels[picks]
    pipeline = args.pipeline or dirs["spm"]
    results["b"] = memory_only_case(
        load_pipeline(pipeline),
        load_pipeline(pipeline),
        images,
        labels,
        args.memory_copies,
        settings,
        os.path.join(args.out, "b"),
    )
    print_results(args, results, settings)
    write_json(args.json, results)
    print(f"json: {args.json}; galleries: {args.out}/a, {args.out}/b")
    return results


if __name__ == "__main__":
    main()
