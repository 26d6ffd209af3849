"""The memorization regime (issue: memorization you can see): on a small training set trained long, does
the twin copy training images, and which removal makes a model stop producing the removed ones?

1. Trains the twin and the SPM on configs/digits_memorization.yaml (the digits at 8x8, 10 per class).
2. Chooses `--num-removed` images, one per class, among those the twin's samples copy most.
3. Trains the two oracles (twin and SPM) without them.
4. Samples every model with the same seeds and measures near-copies of the removed images, Gu's
   memorization rate and the extraction share on the remaining images, and FID against them (the judge's
   features): the SPM and the twin before; SPM deletion, twin + SalUn, twin + gradient ascent, the oracles.
5. Memory's influence: near-copies of each removed image when the SPM's memory is that image alone, and
   when it is another image of its class (`memory_influence`).
6. Image variations (`memory_retrieval="nearest"`, each removed image as the reference): the SPM before
   deletion, after, and the same SPM whose memory never held them (equal bit for bit to "after").

Writes `--json` (a list of records, see spm_gen/reporting/memorization_regime.py), `<json>_settings.json`
(settings, removed ids, times, the variations check) and pictures under `--out`.

    python benchmarks/memorization_regime.py [--reuse] [--out runs/memorization_regime]
    python benchmarks/memorization_regime.py --tiny --out /tmp/regime --json /tmp/regime.json   # plumbing only
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from spm_gen.memory.bank import MemoryBank
from spm_gen.metrics.memorization import memorization, near_copies
from spm_gen.models.classifier_spm import load_classifier
from spm_gen.reporting.comparison import Comparison, TwinBaseline, run_comparison
from spm_gen.reporting.measures import REGIME_TABLE, table
from spm_gen.reporting.memorization_regime import (
    REGIME_TINY,
    ROWS,
    TWIN_METHODS,
    RegimeMeasurements,
    RegimeOptions,
    RegimeSettings,
    choose_removed,
    make_reference,
    memory_influence,
    nearest_variation,
    run_names,
    sampling_plan,
    variation_samples,
)
from spm_gen.reporting.roles import Role
from spm_gen.sampling import load_pipeline
from spm_gen.training import load_config, train
from spm_gen.training.config import run_length
from spm_gen.training.data import load_training_dataset
from spm_gen.unlearning.twin import TwinUnlearning, forget_and_remain
from spm_gen.utils.benchmarking import (
    describe_machine,
    parse_options,
    recorded_settings,
    write_json,
)
from spm_gen.utils.dataclass_options import option

logger = logging.getLogger("memorization_regime")


@dataclass
class Options(RegimeOptions):
    json: str | None = option("benchmarks/memorization_regime_cpu.json", help="write the numbers and settings here")
    twin_steps: int = option(100, help="SalUn / gradient ascent steps on the twin")
    probe: bool = option(False, help="train and sample the twin only: is the regime reached?")


TINY = REGIME_TINY | {"judge": None}


def parse_args(argv: list[str] | None = None) -> Options:
    args = parse_options(Options, argv, __doc__, TINY | {"twin_steps": 2})
    args.data_overrides = {"images_per_class": 3} if args.tiny else {}  # every model and the training set
    return args


def train_model(args: Options, name: str, extra: dict[str, Any]) -> str:
    """The saved pipeline of model `name` (trained now unless --reuse finds it)."""
    folder = os.path.join(args.out, name)
    if args.reuse and os.path.isfile(os.path.join(folder, "pipeline", "model_index.json")):
        return os.path.join(folder, "pipeline")
    overrides = {"output_dir": folder, **args.data_overrides, **extra}
    if args.steps is not None:
        overrides.update(run_length(args.steps))
    start = time.perf_counter()
    path = train(load_config(args.config, overrides))
    logger.info("trained %s in %.0f s", name, time.perf_counter() - start)
    return path


def training_bank(args: Options) -> MemoryBank:
    """The training set of the config (the same items every model of the regime trains on)."""
    config = load_config(args.config, args.data_overrides)
    model = config.model
    shape = (model["in_channels"], model["sample_size"], model["sample_size"])
    dataset = load_training_dataset(config, shape, model["num_class_embeds"])
    return MemoryBank.from_images(dataset.images, dataset.labels, dataset.ids)


def removed_ids(args: Options, twin, training: MemoryBank, settings: RegimeSettings) -> dict[str, int]:
    """The removed ids with the twin's near-copies of each (kept in --out, so the oracles match them)."""
    path = os.path.join(args.out, "removed.json")
    if args.reuse and os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    plan = sampling_plan(settings, twin.unet.config.num_class_embeds, args.out)
    probe = plan.run("twin (choosing)", "choose", twin).generations  # samples in --out/choose
    chosen = choose_removed(probe, training, settings)
    report = memorization(probe.images, training)
    copied = int((near_copies(probe.images, training.get_images().cpu(), settings.threshold) > 0).sum())
    logger.info(
        "the twin: memorization rate %.3f, %d of %d training images near-copied; removed %s",
        report.memorization_rate,
        copied,
        len(training),
        chosen,
    )
    write_json(path, chosen)
    return chosen


def print_table(records: list[dict], extras: dict) -> None:
    print(table(records, REGIME_TABLE))
    print(f"removed (twin near-copies each): {extras['removed']}; regime reached: {extras['regime_reached']}")
    copies = {k: tuple(v["near_copies_when_memory_holds"].values()) for k, v in extras["memory_influence"].items()}
    print(f"SPM near-copies of each removed image with memory = (itself, another image of its class): {copies}")
    print(
        f"SPM deletion {1e3 * extras['spm_deletion_s']:.2f} ms; SalUn {extras['twin_unlearning_s']['twin + SalUn']:.1f} s "
        f"({extras['deletion_speedup_vs_salun']:.0f}x); variations after == never held: "
        f"{extras['variations']['after_equals_never_held']}"
    )


def compare(args, dirs: dict[str, str], spm, twin: TwinBaseline, removed: list[str], reference, settings):
    """The regime's comparison (`twin`: the twin, its forget and remain sets and methods), and the image variations of
    the removed images: before the deletion, after it, and from a memory that never held them."""
    comparison = Comparison(
        spm,
        {"ids": removed},
        "memorization regime",
        twin=twin,
        oracles={role: load_pipeline(dirs[role]) for role in (Role.ORACLE_TWIN, Role.ORACLE_SPM)},
        names=run_names(ROWS),
    )
    variations = {"before": variation_samples(spm, reference.removed, settings)}
    plan = sampling_plan(settings, spm.unet.config.num_class_embeds, os.path.join(args.out, "samples"))
    result = run_comparison(comparison, plan)
    variations["after"] = variation_samples(spm, reference.removed, settings)
    never = type(spm)(unet=spm.unet, scheduler=spm.scheduler, memory_bank=reference.remaining)
    never.set_progress_bar_config(disable=True)
    variations["never"] = variation_samples(never, reference.removed, settings)
    return result, variations


def main(argv: list[str] | None = None) -> tuple[list[dict], dict]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    settings = args.settings
    os.makedirs(args.out, exist_ok=True)
    training = training_bank(args)
    dirs = {"twin": train_model(args, "twin", {"fusion_type": "none"})}
    twin = load_pipeline(dirs["twin"])
    chosen = removed_ids(args, twin, training, settings)
    if args.probe:
        return [], {"removed": chosen}
    dirs["spm"] = train_model(args, "spm", {})
    spm = load_pipeline(dirs["spm"])
    if sorted(spm.memory_bank.ids) != sorted(training.ids):
        raise RuntimeError("the SPM's memory is not the regime's training set")
    removed = list(chosen)
    exclude = {"exclude_ids": list(removed)}
    dirs["oracle_twin"] = train_model(args, "oracle_twin", {"fusion_type": "none", **exclude})
    dirs["oracle_spm"] = train_model(args, "oracle_spm", exclude)
    judge = load_classifier(args.judge)[0] if args.judge else None
    reference = make_reference(training, removed, judge, args.out)
    measured = RegimeMeasurements(reference, settings)
    forget, remain = forget_and_remain(training, removed)
    influence = memory_influence(spm, training, removed, settings)  # before the deletion
    methods = {role: TwinUnlearning(method=method, steps=args.twin_steps) for role, method in TWIN_METHODS.items()}
    baseline = TwinBaseline(twin, forget, remain, methods)
    result, variations = compare(args, dirs, spm, baseline, removed, reference, settings)
    measured.add_rows(result, ROWS)
    receipt = result.receipt
    unlearning_s = {ROWS[role][0]: result[role].seconds for role in TWIN_METHODS}

    pictures = os.path.join(args.out, "pictures")
    titles = [
        f"removed id {item} (class {int(label)}); twin near-copies {chosen[item]}"
        for item, label in zip(removed, forget.labels.tolist())
    ]
    measured.save_pictures(titles, pictures)
    records = measured.records
    extras = {
        "settings": recorded_settings(args),
        "machine": describe_machine(),
        "removed": chosen,
        "removed_labels": forget.labels.tolist(),
        "regime_reached": all(count > 0 for count in chosen.values()),
        "spm_deletion_s": receipt.duration_s,
        "twin_unlearning_s": unlearning_s,
        "deletion_speedup_vs_salun": unlearning_s["twin + SalUn"] / max(receipt.duration_s, 1e-9),
        "memory_influence": influence,
        "variations": {
            "nearest_before": nearest_variation(reference.removed, variations["before"]),
            "nearest_after": nearest_variation(reference.removed, variations["after"]),
            "after_equals_never_held": torch.equal(variations["after"], variations["never"]),
        },
    }
    write_json(args.json, records)
    write_json(os.path.splitext(args.json)[0] + "_settings.json", extras)
    print_table(records, extras)
    logger.info("json: %s; pictures: %s", args.json, pictures)
    return records, extras


if __name__ == "__main__":
    main()
