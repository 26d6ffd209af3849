"""Classification unlearning on the digits: SPM deletion against parametric baselines.

For two forget requests (one class; a random 10% of the training items) it measures, per method, UA, RA,
TA, MIA, the prediction gap to the oracle retrained without the forget set (hard and soft) and the time
the unlearning took:

- SPM deletion: `bank.remove(ids)` on a trained classifier SPM (prototype head), plus the first
  prediction's memory update; its oracle is an SPM trained without the forget set.
- Retrain: the parametric classifier (same encoder, linear head) trained from scratch without the forget
  set; it is also the oracle of the parametric methods.
- Fine-tune: the parametric classifier fine-tuned on the remaining data.
- Gradient ascent: the parametric classifier trained to increase its loss on the forget data.

    python benchmarks/classifier_unlearning.py [--steps 400] [--out runs/classifier_unlearning]
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass

import torch

from spm_gen.data import load_digits_dataset
from spm_gen.metrics.unlearning import probabilities, unlearning_metrics
from spm_gen.models.classifier_spm import load_classifier
from spm_gen.reporting.measures import Measure, table
from spm_gen.training import ClassifierTrainConfig, load_config
from spm_gen.training.classifier_loop import train_classifier
from spm_gen.unlearning.baselines import finetune, gradient_ascent
from spm_gen.unlearning.forget_set import ForgetSet, forget_ids
from spm_gen.utils.atomic import atomic_write_text
from spm_gen.utils.benchmarking import RunFolderOptions, describe_machine, parse_options, write_json
from spm_gen.utils.dataclass_options import option

COLUMNS = [
    Measure("method", "method"),
    Measure("UA", "UA", better="higher", fmt=".2f"),
    Measure("RA", "RA", better="higher", fmt=".2f"),
    Measure("TA", "TA (remaining classes)", better="higher", fmt=".2f"),
    Measure("TA_all", "TA (all)", fmt=".2f"),
    Measure("MIA_efficacy", "MIA-efficacy", better="higher", fmt=".2f"),
    Measure("PG_hard", "PG hard", better="lower", fmt=".2f"),
    Measure("PG_soft", "PG soft (KL)", "nats", "lower", ".2f"),
    Measure("PG_soft_TV", "PG soft (100 x TV)", better="lower", fmt=".2f"),
    Measure("seconds", "time", "s", fmt=".4f"),
]
PARAMETRIC = ("Retrain (parametric)", "Fine-tune (parametric)", "Gradient ascent (parametric)")


def _train(args, name: str, head: str, exclude: list[str]) -> tuple[str, float]:
    overrides = {"output_dir": os.path.join(args.out, name), "max_train_steps": args.steps, "head": head}
    config = load_config(args.config, overrides, config_class=ClassifierTrainConfig)
    config.exclude_ids = exclude
    start = time.perf_counter()
    folder = train_classifier(config)
    return folder, time.perf_counter() - start


@dataclass
class Options(RunFolderOptions):
    config: str = option("configs/digits_classifier.yaml", help="the classifier training config")
    steps: int = option(400, help="training steps of each classifier")
    finetune_steps: int = option(40, help="10% of the training steps by default")
    ascent_steps: int = option(10, help="gradient-ascent steps of the parametric baseline")


def parse_args(argv: list[str] | None = None) -> Options:
    tiny = {"steps": 2, "finetune_steps": 1, "ascent_steps": 1}
    return parse_options(Options, argv, __doc__, tiny)


def forget_table(args, request: ForgetSet, train_set, test_set, full: dict[str, str]) -> dict[str, dict]:
    """The rows (method -> metrics and seconds) of one forget request; `full`: the SPM and the parametric
    classifier trained on all the data."""
    ids = forget_ids(train_set, request)
    forget_mask = torch.tensor([i in set(ids) for i in train_set.ids])
    forget, remain = train_set.subset(forget_mask), train_set.subset(~forget_mask)
    splits = (forget, remain, test_set)
    forgotten = [request.forget_class] if request.forget_class is not None else []
    tag = request.name.replace(" ", "_").replace("%", "pct")
    rows = {}

    # SPM: deletion from memory, against an SPM trained without the forget set
    oracle_dir, _ = _train(args, f"spm_oracle_{tag}", "prototype", ids)
    oracle, oracle_bank = load_classifier(oracle_dir)
    oracle_p = probabilities(oracle, oracle_bank, test_set)
    spm, bank = load_classifier(full["spm"])
    probabilities(spm, bank, test_set)  # memory embeddings cached, as in a serving model
    start = time.perf_counter()
    bank.remove(ids=ids, reason=f"benchmark: forget {request.name}")
    spm.class_sums(bank)  # the memory update, proportional to the removed items
    deletion_s = time.perf_counter() - start
    rows["SPM deletion"] = {**unlearning_metrics(spm, bank, splits, forgotten, oracle_p), "seconds": deletion_s}
    rows["SPM oracle (retrained SPM)"] = {
        **unlearning_metrics(oracle, oracle_bank, splits, forgotten, oracle_p),
        "seconds": float("nan"),
    }

    # parametric: retrain (= the oracle), fine-tune, gradient ascent
    retrain_dir, retrain_s = _train(args, f"linear_retrain_{tag}", "linear", ids)
    retrained, _ = load_classifier(retrain_dir)
    retrain_p = probabilities(retrained, None, test_set)

    def parametric(method: str, model, seconds: float) -> None:  # measured at once, in the order made
        rows[method] = {**unlearning_metrics(model, None, splits, forgotten, retrain_p), "seconds": seconds}

    parametric("Retrain (parametric)", retrained, retrain_s)
    original, _ = load_classifier(full["linear"])
    parametric("Fine-tune (parametric)", *finetune(original, remain, steps=args.finetune_steps))
    parametric("Gradient ascent (parametric)", *gradient_ascent(copy.deepcopy(original), forget, args.ascent_steps))
    parametric("No unlearning (parametric)", original, 0.0)
    return rows


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    base = load_config(args.config, config_class=ClassifierTrainConfig)
    train_set = load_digits_dataset(image_size=base.image_size, split="train", seed=base.seed)
    test_set = load_digits_dataset(image_size=base.image_size, split="test", seed=base.seed)
    spm_dir, spm_train_s = _train(args, "spm_full", "prototype", [])
    linear_dir, linear_train_s = _train(args, "linear_full", "linear", [])
    print(f"trained: SPM {spm_train_s:.0f} s, parametric {linear_train_s:.0f} s")
    full = {"spm": spm_dir, "linear": linear_dir}
    tables = {
        request.name: forget_table(args, request, train_set, test_set, full)
        for request in (ForgetSet(forget_class=3), ForgetSet(fraction=0.1, seed=0))
    }
    lines = [
        f"Digits {base.image_size}x{base.image_size}, {len(train_set)} train / {len(test_set)} test images; "
        f"{args.steps} training steps per model; fine-tune {args.finetune_steps} steps, gradient ascent "
        f"{args.ascent_steps} steps. All values in %, except seconds. PG: prediction gap to the oracle "
        "(the SPM's: an SPM retrained without the forget set; the parametric methods': the retrained "
        "parametric classifier).",
    ]
    for name, rows in tables.items():
        lines += ["", f"**Forget {name}**", "", table([{"method": m, **r} for m, r in rows.items()], COLUMNS)]
        fastest = min(rows[m]["seconds"] for m in PARAMETRIC)
        lines.append(
            f"\nSPM deletion is {fastest / rows['SPM deletion']['seconds']:.0f}x faster than the fastest parametric baseline."
        )
    os.makedirs(args.out, exist_ok=True)
    atomic_write_text(os.path.join(args.out, "classifier_unlearning.md"), "\n".join(lines) + "\n")
    result = {"settings": vars(args), "machine": describe_machine(), "tables": tables}
    write_json(args.json or os.path.join(args.out, "classifier_unlearning.json"), result)
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
