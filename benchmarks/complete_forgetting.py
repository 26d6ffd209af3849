"""Complete forgetting (issue: after a deletion the SPM no longer produces the image): which training
protocol keeps instance detail in memory, so that deleting an image from memory stops the model producing it?

Three parts, each reusing what --out already holds (--reuse):

- regime: every protocol of `spm_gen.reporting.complete_forgetting.PROTOCOLS` trained on the memorization
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
    python benchmarks/complete_forgetting.py --part regime --reuse
    python benchmarks/complete_forgetting.py --tiny --out /tmp/cf --json /tmp/cf.json   # plumbing only

Writes `--json` (records `{"protocol", "phase", "near_copies_of_removed", "memorization_rate",
"extraction_share", "fid_remaining", "seconds", ...}`), `<json>_settings.json` and pictures under --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

from spm_gen.reporting.complete_forgetting import ORACLE_PROTOCOLS, PROTOCOLS, choose_protocol_removed
from spm_gen.reporting.memorization_regime import RegimeSettings, sample_classes
from spm_gen.sampling import load_pipeline
from spm_gen.training import load_config, parse_overrides, train
from spm_gen.training.data import load_training_set

logger = logging.getLogger("complete_forgetting")

SHIPPED = {"twin": "assets/memorization/twin", "baseline": "assets/memorization/spm",
           "baseline_oracle": "assets/memorization/oracle_spm"}  # fmt: skip
SHIPPED_REMOVED = "assets/memorization/removed.json"
CLASSES_MEMORY_ONLY = (5, 6, 7, 8, 9)
CLASS_DELETED = 7
DATA_RICH_CONFIG = "configs/digits.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/digits_memorization.yaml")
    parser.add_argument("--part", choices=["regime", "data_rich", "classes"], nargs="+", default=["regime"])
    parser.add_argument("--train", help="only train the model NAME into --out/NAME (see model_overrides)")
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--data-rich-protocol", default="self_below_100", choices=list(PROTOCOLS))
    parser.add_argument("--steps", type=int, default=None, help="training steps per model (the config's by default)")
    parser.add_argument("--per-class", type=int, default=50, help="samples of every class, per model")
    parser.add_argument("--num-removed", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.04, help="near-copy RMS pixel distance")
    parser.add_argument("--inference-steps", type=int, default=50)
    parser.add_argument("--judge", default="assets/digits/judge", help="the classifier whose features FID uses")
    parser.add_argument("--out", default="runs/complete_forgetting")
    parser.add_argument("--json", default="benchmarks/complete_forgetting_cpu.json")
    parser.add_argument("--reuse", action="store_true", help="reuse models (and removed ids) found in --out")
    parser.add_argument("--tiny", action="store_true", help="configs/tiny.yaml, a few steps and samples, no FID")
    args = parser.parse_args(argv)
    args.shipped, args.data_overrides, args.data_rich_config = dict(SHIPPED), [], DATA_RICH_CONFIG
    if args.tiny:
        args.config, args.steps, args.per_class, args.inference_steps, args.judge = "configs/tiny.yaml", 4, 2, 2, None
        args.data_overrides, args.shipped, args.data_rich_config = ["--images_per_class", "4"], {}, args.config
    return args


def settings_of(args: argparse.Namespace) -> RegimeSettings:
    settings = RegimeSettings(
        per_class=args.per_class,
        threshold=args.threshold,
        num_removed=args.num_removed,
        num_inference_steps=args.inference_steps,
    )
    settings.check()
    return settings


def model_overrides(args: argparse.Namespace, name: str) -> tuple[str, list[str]]:
    """The config and overrides of model `name`: `twin`, `<protocol>`, `<protocol>_oracle` (regime),
    `data_rich_<protocol>` and `classes_memory_only`."""
    if name == "twin":
        return args.config, ["--fusion_type", "none"]
    if name == "classes_memory_only":
        return args.data_rich_config, ["--memory_only_classes", *map(str, CLASSES_MEMORY_ONLY)]
    if name.startswith("data_rich_"):
        return args.data_rich_config, list(PROTOCOLS[name.removeprefix("data_rich_")].overrides)
    protocol = PROTOCOLS[name.removesuffix("_oracle")]
    extra = ["--exclude_ids", *removed_ids(args, protocol.name)] if name.endswith("_oracle") else []
    return args.config, [*protocol.overrides, *extra]


def train_model(args: argparse.Namespace, name: str) -> str:
    """The saved pipeline of model `name`: shipped, found in --out with --reuse, or trained now."""
    if name in args.shipped:
        return args.shipped[name]
    folder = os.path.join(args.out, name)
    if args.reuse and os.path.isfile(os.path.join(folder, "pipeline", "model_index.json")):
        return os.path.join(folder, "pipeline")
    config, extra = model_overrides(args, name)
    overrides = ["--output_dir", folder, *args.data_overrides, *extra]
    if args.steps is not None:
        steps = str(args.steps)
        overrides += ["--max_train_steps", steps, "--sample_every", steps, "--checkpointing_steps", steps]
    start = time.perf_counter()
    path = train(load_config(config, parse_overrides(overrides)))
    logger.info("trained %s in %.0f s", name, time.perf_counter() - start)
    return path


def training_set_of(args: argparse.Namespace, protocol: str):
    """The regime's training set under `protocol` (which items are memory-only)."""
    config = load_config(args.config, parse_overrides([*args.data_overrides, *PROTOCOLS[protocol].overrides]))
    model = config.model
    return load_training_set(config, (model["in_channels"], model["sample_size"], model["sample_size"]), 10)


def removed_ids(args: argparse.Namespace, protocol: str) -> list[str]:
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
    settings = settings_of(args)
    twin = load_pipeline(train_model(args, "twin"))
    probe = sample_classes("twin (choosing)", twin, 10, settings, os.path.join(args.out, "choose"))
    training_set = training_set_of(args, protocol)
    from spm_gen.memory.bank import MemoryBank

    dataset = training_set.dataset
    training = MemoryBank.from_images(dataset.images, dataset.labels, dataset.ids)
    chosen = choose_protocol_removed(probe, training, training_set.memory_only_ids if memory_only else None, settings)
    os.makedirs(args.out, exist_ok=True)
    with open(path, "w") as f:
        json.dump(chosen, f, indent=2)
    logger.info("R for %s: %s (twin near-copies each)", protocol, chosen)
    return list(chosen)


def main(argv: list[str] | None = None) -> list[dict]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if args.train:
        train_model(args, args.train)
        return []
    raise NotImplementedError


if __name__ == "__main__":
    main()
