"""Complete forgetting (issue: after a deletion the SPM no longer produces the image): which training
protocol keeps instance detail in memory, so that deleting an image from memory stops the model producing it?

Three parts, each reusing what --out already holds (--reuse):

- regime: every protocol of `experiments.complete_forgetting.PROTOCOLS` trained on the memorization
  regime (configs/digits_memorization.yaml, 100 images, 4,000 steps; the baseline and the twin are the
  shipped models of assets/memorization). R = 5 removed images, one per class, among those the twin copies
  (for a memory-only protocol, among its memory-only items). Before and after deleting R from memory, and for
  the protocol's oracle (retrained without R): near-copies of R in 500 samples (0.04 RMS), Gu's rate and the
  extraction share on the remaining images, FID on them (the judge's features), time.
- data_rich: a protocol (--data-rich-protocol) on configs/digits.yaml, against the shipped SPM and twin:
  quality_parity's measurement (2,000 samples, 50 DDIM steps, sampling seeds 0 and 1), plus Gu's rate and
  near-copies of training images.
- classes: the weights trained on classes 0-4 only, classes 5-9 memory-only; classes 5-9 generated from
  memory: judge consistency and FID against their training images, beside the shipped twin; then class 7
  deleted from memory: UA and near-copies of class 7.

    python benchmarks/complete_forgetting.py --train NAME        # one model into --out/NAME (background runs)
    python benchmarks/complete_forgetting.py --train NAME --resume   # the same, from its last checkpoint
    python benchmarks/complete_forgetting.py --part regime --reuse
    python benchmarks/complete_forgetting.py --tiny --out /tmp/cf --json /tmp/cf.json   # plumbing only

Writes `--json` (records `{"protocol", "phase", "near_copies_of_removed", "memorization_rate",
"extraction_share", "fid_remaining", "seconds", ...}`), `<json>_settings.json` and pictures under --out.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # experiments/

from experiments.complete_forgetting import (
    ORACLE_PROTOCOLS,
    PROTOCOLS,
    DataRichReference,
    choose_protocol_removed,
    data_rich_record,
    own_image_effect,
    protocol_records,
)
from spm_gen.memory.bank import MemoryBank
from spm_gen.metrics.fid import compute_fid, save_images
from spm_gen.metrics.memorization import near_copies
from spm_gen.models.classifier_spm import load_classifier
from spm_gen.reporting.comparison import Comparison, SamplingPlan, TwinBaseline, run_comparison
from spm_gen.reporting.measures import PROTOCOL, REGIME_TABLE, SECONDS, plain, table
from spm_gen.reporting.memorization_regime import (
    REGIME_TINY,
    RegimeMeasurements,
    RegimeOptions,
    RegimeSettings,
    make_reference,
    run_names,
    sampling_plan,
)
from spm_gen.reporting.roles import Role
from spm_gen.sampling import load_pipeline
from spm_gen.training import load_config, train
from spm_gen.training.config import run_length
from spm_gen.training.data import load_training_set
from spm_gen.unlearning.twin import TwinUnlearning, forget_and_remain
from spm_gen.utils.benchmarking import (
    describe_machine,
    parse_options,
    recorded_settings,
    write_json,
)
from spm_gen.utils.dataclass_options import option

logger = logging.getLogger("complete_forgetting")

SHIPPED = {
    "twin": "assets/memorization/twin",
    "baseline": "assets/memorization/spm",
    "baseline_oracle": "assets/memorization/oracle_spm",
}
SHIPPED_REMOVED = "assets/memorization/removed.json"
DIGITS_SHIPPED = {"twin": "assets/digits/twin", "spm": "assets/digits/spm"}
CLASSES_MEMORY_ONLY = (5, 6, 7, 8, 9)
CLASS_DELETED = 7
DATA_RICH_CONFIG = "configs/digits.yaml"
# the regime's rows of every protocol, in order: role -> (model, phase); protocols with an oracle add its row
ROWS = {
    Role.TWIN_BEFORE: ("twin", "before"),
    Role.SPM_BEFORE: ("spm", "before"),
    Role.SPM_AFTER: ("spm", "after"),
    Role.NEVER_HELD: ("spm never held R", "after"),
}


@dataclass
class Options(RegimeOptions):
    json: str | None = option("benchmarks/complete_forgetting_cpu.json", help="write the numbers and settings here")
    part: list[str] = option(
        help="the parts to run",
        choices=["regime", "own_image", "data_rich", "classes"],
        default_factory=lambda: ["regime", "own_image"],
    )
    train: str | None = option(None, help="only train the model NAME into --out/NAME (see model_overrides)")
    protocols: list[str] = option(
        help="the protocols", choices=list(PROTOCOLS), default_factory=lambda: list(PROTOCOLS)
    )
    data_rich_protocol: str = option("memory_only_half", help="the data-rich part's protocol", choices=list(PROTOCOLS))
    data_rich_models: list[str] | None = option(None, help="of twin, 'spm (shipped)' and the protocol (all)")
    data_rich_seeds: list[int] = option(help="sampling seeds", default_factory=lambda: [0, 1])
    resume: bool = option(False, help="an interrupted training resumes from its checkpoint")


TINY = REGIME_TINY | {"judge": None}


def parse_args(argv: list[str] | None = None) -> Options:
    args = parse_options(Options, argv, __doc__, TINY)
    args.shipped, args.data_overrides, args.data_rich_config = derived_arguments(args)
    return args


def derived_arguments(args: Options) -> tuple[dict[str, str], dict[str, Any], str]:
    """The shipped models used as they are, the overrides of every model's data, and the data-rich config (with
    --tiny: nothing shipped, 4 images per class, the tiny config)."""
    if args.tiny:
        return {}, {"images_per_class": 4}, args.config
    return dict(SHIPPED), {}, DATA_RICH_CONFIG


def model_overrides(args: Options, name: str) -> tuple[str, dict[str, Any]]:
    """The config and overrides of model `name`: `twin`, `<protocol>`, `<protocol>_oracle` (regime),
    `data_rich_<protocol>` and `classes_memory_only`."""
    if name == "twin":
        return args.config, {"fusion_type": "none"}
    if name.startswith("classes_memory_only"):  # "classes_memory_only" (the baseline) or "..._<protocol>"
        protocol = name.removeprefix("classes_memory_only").removeprefix("_")
        extra = PROTOCOLS[protocol].overrides if protocol else {}
        return args.data_rich_config, {**extra, "memory_only_classes": list(CLASSES_MEMORY_ONLY)}
    if name.startswith("data_rich_"):
        return args.data_rich_config, PROTOCOLS[name.removeprefix("data_rich_")].overrides
    protocol = PROTOCOLS[name.removesuffix("_oracle")]
    extra = {"exclude_ids": removed_ids(args, protocol.name)} if name.endswith("_oracle") else {}
    return args.config, {**protocol.overrides, **extra}


def train_model(args: Options, name: str) -> str:
    """The saved pipeline of model `name`: shipped, found in --out with --reuse, or trained now."""
    if name in args.shipped:
        return args.shipped[name]
    folder = os.path.join(args.out, name)
    if args.reuse and os.path.isfile(os.path.join(folder, "pipeline", "model_index.json")):
        return os.path.join(folder, "pipeline")
    config, extra = model_overrides(args, name)
    overrides = {"output_dir": folder, **args.data_overrides, **extra}
    if args.resume and os.path.isdir(os.path.join(folder, "checkpoints")):
        overrides["resume"] = "latest"  # an interrupted training goes on from its last checkpoint
    if args.steps is not None:
        overrides.update(run_length(args.steps))
    start = time.perf_counter()
    path = train(load_config(config, overrides))
    logger.info("trained %s in %.0f s", name, time.perf_counter() - start)
    return path


def training_set_of(args: Options, protocol: str):
    """The regime's training set under `protocol` (which items are memory-only)."""
    config = load_config(args.config, {**args.data_overrides, **PROTOCOLS[protocol].overrides})
    model = config.model
    return load_training_set(config, (model["in_channels"], model["sample_size"], model["sample_size"]), 10)


def removed_ids(args: Options, protocol: str) -> list[str]:
    """R for `protocol` (kept in --out/removed_<protocol>.json, so that its oracle excludes the same ids): the
    shipped regime's removed ids, or for a memory-only protocol the twin's most copied memory-only items."""
    memory_only = PROTOCOLS[protocol].memory_only
    if not memory_only and "twin" in args.shipped:
        with open(SHIPPED_REMOVED) as f:
            return list(json.load(f))
    path = os.path.join(args.out, f"removed_{'memory_only' if memory_only else 'all'}.json")
    if os.path.isfile(path):
        with open(path) as f:
            return list(json.load(f))
    settings = args.settings
    twin = load_pipeline(train_model(args, "twin"))
    probe = sampling_plan(settings, 10, args.out).run("twin (choosing)", Role.CHOOSING, twin).generations
    training_set = training_set_of(args, protocol)
    dataset = training_set.dataset
    training = MemoryBank.from_images(dataset.images, dataset.labels, dataset.ids)
    chosen = choose_protocol_removed(probe, training, training_set.memory_only_ids if memory_only else None, settings)
    write_json(path, chosen)
    logger.info("R for %s: %s (twin near-copies each)", protocol, chosen)
    return list(chosen)


def training_seconds(pipeline_dir: str) -> float | None:
    """Wall time of the run that made `pipeline_dir`: its config echo (written at the start) to the pipeline's
    unet weights (written at the end); None for a folder that is not a run's (shipped models)."""
    run = os.path.dirname(pipeline_dir)
    start, end = os.path.join(run, "config.json"), os.path.join(pipeline_dir, "model_index.json")
    if not (os.path.isfile(start) and os.path.basename(pipeline_dir) == "pipeline"):
        return None
    return os.path.getmtime(end) - os.path.getmtime(start)


def measure_protocol(args: Options, protocol: str, training, judge, settings) -> tuple[list[dict], dict]:
    """Before / after deleting R from the protocol's SPM, the same SPM whose memory never held R, the twin and
    (for `ORACLE_PROTOCOLS`) the oracle: the regime's records, and the protocol's extras."""
    removed = removed_ids(args, protocol)
    work = os.path.join(args.out, "measured", protocol)
    reference = make_reference(training, removed, judge, work)
    measured = RegimeMeasurements(reference, settings)
    spm = load_pipeline(train_model(args, protocol))
    targets = spm.memory_bank.training_targets
    never = spm.with_memory_bank(reference.remaining)  # the same defaults (an anchor model reads anchors)
    never.set_progress_bar_config(disable=True)
    oracles = {Role.NEVER_HELD: never}
    rows = dict(ROWS)
    if protocol in ORACLE_PROTOCOLS:
        oracle_dir = train_model(args, f"{protocol}_oracle")
        oracles[Role.ORACLE] = load_pipeline(oracle_dir)
        rows[Role.ORACLE] = ("oracle", "after")
    twin = TwinBaseline(load_pipeline(train_model(args, "twin")))  # sampled, not unlearned
    comparison = Comparison(
        spm, {"ids": removed}, f"complete forgetting: {protocol}", twin, oracles, names=run_names(rows)
    )
    result = run_comparison(comparison, sampling_plan(settings, 10, os.path.join(work, "samples")))
    measured.add_rows(result, rows)
    receipt = result.receipt
    exact = torch.equal(result[Role.SPM_AFTER].generations.images, result[Role.NEVER_HELD].generations.images)
    seconds = {("spm", "after"): receipt.duration_s}
    if protocol in ORACLE_PROTOCOLS:
        seconds[("oracle", "after")] = training_seconds(oracle_dir)
    titles = [f"{protocol}: removed id {item} (class {int(training.get_labels([item])[0])})" for item in removed]
    pictures = measured.save_pictures(titles, os.path.join(work, "pictures"))
    extras = {
        "removed": removed,
        "was_training_target": receipt.was_training_target,
        "training_targets": None if targets is None else len(targets),
        "deletion_s": receipt.duration_s,
        "after_equals_never_held": exact,
        "training_s": training_seconds(train_model(args, protocol)),
        "pictures": pictures,
    }
    return protocol_records(protocol, measured.records, seconds), extras


def salun_seconds(args: Options, training, settings) -> float:
    """SalUn (100 steps of random-label fine-tuning, the regime's) on the twin for the shipped R: what a
    parametric removal costs, against which each deletion's time is compared."""
    removed = removed_ids(args, "baseline")
    forget, remain = forget_and_remain(training, removed)
    twin = load_pipeline(train_model(args, "twin"))
    steps = 2 if args.tiny else 100
    _, seconds = TwinUnlearning(method="random_label", steps=steps).apply(twin, forget, remain, settings.seed)
    return seconds


def run_regime(args: Options, settings: RegimeSettings) -> tuple[list[dict], dict]:
    training_set = training_set_of(args, "baseline")
    dataset = training_set.dataset
    training = MemoryBank.from_images(dataset.images, dataset.labels, dataset.ids)
    judge = load_classifier(args.judge)[0] if args.judge else None
    records, extras = [], {"protocols": {}}
    for protocol in args.protocols:
        rows, extras["protocols"][protocol] = measure_protocol(args, protocol, training, judge, settings)
        records += rows
        logger.info("%s: %s", protocol, [(r["model"], r["phase"], r["near_copies_of_removed"]) for r in rows])
    extras["salun_s"] = salun_seconds(args, training, settings)
    for extra in extras["protocols"].values():
        extra["deletion_speedup_vs_salun"] = extras["salun_s"] / max(extra["deletion_s"], 1e-9)
    return records, extras


def digits_reference(args: Options, classes: set[int] | None, name: str) -> tuple[MemoryBank, str]:
    """The data-rich training images (of `classes`, all when None) as a bank and as a folder for FID."""
    config = load_config(args.data_rich_config, args.data_overrides)
    model = config.model
    dataset = load_training_set(config, (model["in_channels"], model["sample_size"], model["sample_size"]), 10).dataset
    if classes is not None:
        dataset = dataset.subset(torch.isin(dataset.labels, torch.tensor(sorted(classes))))
    bank = MemoryBank.from_images(dataset.images, dataset.labels, dataset.ids)
    folder = save_images(bank.get_images().cpu(), os.path.join(args.out, "reference", name))
    return bank, folder


def generations_of(args: Options, name: str, pipe, labels: list[int], seed: int, folder: str):
    """Samples at the data-rich settings: 50 DDIM steps (--inference-steps), w = 0, 64 items of memory per
    class for an SPM (quality_parity's)."""
    reads_class = pipe.memory_bank is not None and pipe.config.default_memory_retrieval == "random"
    memory_size = (4 if args.tiny else 64) if reads_class else None  # an anchor model reads its own k
    settings = replace(args.settings, guidance_scale=0.0, batch_size=100, seed=seed, memory_size=memory_size)
    return SamplingPlan(labels, folder, settings).sample(name, pipe, folder)


def run_data_rich(args: Options, judge, judge_bank, records: list[dict]) -> list[dict]:
    """The protocol's data-rich SPM against the shipped SPM and twin (configs/digits.yaml): FID on all classes
    against the training images, judge consistency, Gu's rate and near-copies of training images, for
    sampling seeds 0 and 1 (2,000 samples each); `records` already measured are kept (resumable)."""
    training, reference = digits_reference(args, None, "digits_train")
    measured_against = DataRichReference(training, reference, judge, judge_bank, args.settings.threshold)
    paths = {
        "twin": lambda: DIGITS_SHIPPED["twin"],
        "spm (shipped)": lambda: DIGITS_SHIPPED["spm"],
        args.data_rich_protocol: lambda: train_model(args, f"data_rich_{args.data_rich_protocol}"),
    }
    names = args.data_rich_models or ([args.data_rich_protocol] if args.tiny else list(paths))
    models = {name: paths[name]() for name in names}
    num_images = 40 if args.tiny else 2000
    labels = [i % 10 for i in range(num_images)]
    done = {(r["model"], r["seed"]) for r in records}
    for name, path in models.items():
        pipe = load_pipeline(path)
        for seed in args.data_rich_seeds:
            if (name, seed) in done:
                continue
            folder = os.path.join(args.out, "measured", "data_rich", f"{name}_s{seed}".replace(" ", "_"))
            gen = generations_of(args, name, pipe, labels, seed, folder)
            record = {
                "model": name,
                "seed": seed,
                "num_images": num_images,
                "seconds": gen.seconds,
                **data_rich_record(gen, measured_against),
            }
            records.append(record)
            logger.info("data rich: %s", record)
            write_json(part_json(args, "data_rich"), records)
    return records


def run_classes(args: Options, judge, judge_bank, design: str | None = None) -> list[dict]:
    """Classes 5-9 memory-only: generated from memory by weights that never denoised them, beside the shipped
    twin (trained on all ten); then class 7 deleted from memory. With `design` (a protocol), the SPM is trained
    with its overrides too, and the twin is left out."""
    unseen = set(CLASSES_MEMORY_ONLY)
    per_class = 4 if args.tiny else 200
    labels = [c for c in range(10) for _ in range(per_class)]
    _, unseen_reference = digits_reference(args, unseen, "classes_5_9")
    class_bank, _ = digits_reference(args, {CLASS_DELETED}, f"class_{CLASS_DELETED}")
    class_images = class_bank.get_images().cpu()
    models = {"twin (all ten classes)": DIGITS_SHIPPED["twin"]} if not args.tiny and design is None else {}
    name = "classes_memory_only" + (f"_{design}" if design else "")
    models["spm, classes 5-9 memory-only" + (f", {design}" if design else "")] = train_model(args, name)
    records = []
    for name, path in models.items():
        pipe = load_pipeline(path)
        phases = ["before", "after"] if pipe.memory_bank is not None else ["before"]
        before = None
        for phase in phases:
            if phase == "after":  # the same seeds: only class 7 may change (a sample reads its own class's memory)
                pipe.memory_bank.remove(labels=[CLASS_DELETED], reason=f"delete class {CLASS_DELETED}")
            folder = os.path.join(args.out, "measured", "classes", f"{name}_{phase}".replace(" ", "_"))
            gen = generations_of(args, name, pipe, labels, 0, folder)
            kept = gen.labels != CLASS_DELETED
            unchanged = None if before is None else bool(torch.equal(gen.images[kept], before.images[kept]))
            before = gen
            unseen_folder = save_images(gen.of_classes(unseen), folder + "_5_9")
            deleted = gen.images[gen.labels == CLASS_DELETED]
            predicted = judge.predict(gen.images, judge_bank).argmax(1).cpu() if judge else None
            right = None if predicted is None else (predicted == gen.labels)
            record = {
                "model": name,
                "phase": phase,
                "num_images": len(gen.images),
                "consistency_0_4": None if right is None else float(right[gen.labels < 5].float().mean()),
                "consistency_5_9": None if right is None else float(right[gen.labels >= 5].float().mean()),
                "fid_5_9": compute_fid(unseen_folder, unseen_reference, "domain", judge)["fid"] if judge else None,
                f"ua_class_{CLASS_DELETED}": None
                if right is None
                else 1 - float(right[gen.labels == CLASS_DELETED].float().mean()),
                f"near_copies_class_{CLASS_DELETED}": int(
                    near_copies(deleted, class_images, args.settings.threshold).sum()
                ),
                "other_classes_unchanged": unchanged,
                "seconds": gen.seconds,
            }
            records.append(record)
            logger.info("classes: %s", record)
    return records


def part_json(args: Options, part: str) -> str:
    """The json of a part: --json for the regime, `<json stem>_<part>.json` for the others."""
    if part == "regime":
        return args.json
    stem = os.path.splitext(args.json)[0].removesuffix("_cpu")
    return f"{stem}_{part}_cpu.json" if args.json.endswith("_cpu.json") else f"{stem}_{part}.json"


def main(argv: list[str] | None = None) -> list[dict]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if args.train:
        train_model(args, args.train)
        return []
    settings = args.settings
    os.makedirs(args.out, exist_ok=True)
    base = {
        "settings": recorded_settings(args),
        "machine": describe_machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    judge, judge_bank = load_classifier(args.judge) if args.judge else (None, None)
    records = []
    for part in args.part:
        path = part_json(args, part)
        if part == "regime":
            records, extras = run_regime(args, settings)
            write_json(path, records)
            write_json(os.path.splitext(path)[0] + "_settings.json", {**base, **extras})
            print(table(records, REGIME_COLUMNS))
        elif part == "own_image":  # why self-support does not move the copies: is the own image used at all?
            rows = [
                {
                    "protocol": p,
                    **{band: e for band, e in own_image_effect(load_pipeline(train_model(args, p))).items()},
                }
                for p in args.protocols
            ]
            write_json(path, rows)
            logger.info("own image effect: %s", rows)
        elif part == "data_rich":
            earlier = json.load(open(path)) if args.reuse and os.path.isfile(path) else []
            rows = run_data_rich(args, judge, judge_bank, earlier)
            write_json(os.path.splitext(path)[0] + "_settings.json", base)
            print(table(rows, plain(*rows[0])))
        else:
            rows = run_classes(args, judge, judge_bank)
            write_json(path, rows)
            write_json(os.path.splitext(path)[0] + "_settings.json", base)
            print(table(rows, plain(*rows[0])))
    return records


REGIME_COLUMNS = [PROTOCOL, *REGIME_TABLE, SECONDS]


if __name__ == "__main__":
    main()
