"""Sample quality of the SPM against its parametric twin, trained with the same budget on the digits.

Trains four models with configs/digits.yaml and the same steps and batch size: the SPM (additive fusion,
clean memory), the twin (fusion_type none), the SPM with memory_encoding paper, and the SPM with dot fusion.
Then, per model, samples `--per-class` images of every class and reports:

- class consistency: accuracy of a small digits classifier (logistic regression on pixels, trained on the
  digits train split, its test accuracy printed) on the samples, per class and overall;
- the mean nearest-neighbour distance of the samples to the training set (RMS pixel distance in [0, 1]).

    python benchmarks/train_quality.py [--steps 1500] [--per-class 20] [--out runs/train_quality]
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from spm_gen import SPMDiffusionPipeline
from spm_gen.data import load_digits_dataset, to_memory_bank
from spm_gen.reporting.measures import GUIDANCE, MODEL, Measure, table
from spm_gen.training import load_config, train
from spm_gen.training.logs import read_losses
from spm_gen.utils.atomic import atomic_write_text
from spm_gen.utils.benchmarking import RunFolderOptions, describe_machine, parse_options, write_json
from spm_gen.utils.dataclass_options import option
from spm_gen.utils.images import save_image_grid

VARIANTS = {
    "spm (additive, clean)": {"fusion_type": "additive"},
    "twin (fusion none)": {"fusion_type": "none"},
    "spm (memory_encoding paper)": {"fusion_type": "additive", "memory_encoding": "paper"},
    "spm (dot fusion)": {"fusion_type": "dot"},
}


def digits_judge(image_size: int, seed: int) -> tuple[LogisticRegression, float]:
    train_set = load_digits_dataset(image_size=image_size, split="train", seed=seed)
    test_set = load_digits_dataset(image_size=image_size, split="test", seed=seed)
    judge = LogisticRegression(max_iter=2000, C=0.5)
    judge.fit(train_set.images.flatten(1).numpy() / 255.0, train_set.labels.numpy())
    accuracy = judge.score(test_set.images.flatten(1).numpy() / 255.0, test_set.labels.numpy())
    return judge, float(accuracy)


COLUMNS = [
    MODEL,
    GUIDANCE,
    Measure("class_consistency", "class consistency", better="higher"),
    Measure("mean_nn_distance", "mean NN distance to train"),
    Measure("final_loss", "final loss"),
    Measure("train_s", "training time", "s"),
    Measure("sample_s", "sampling time", "s"),
]


@dataclass
class Options(RunFolderOptions):
    config: str = option("configs/digits.yaml", help="the training config")
    steps: int = option(1500, help="training steps of each variant")
    per_class: int = option(20, help="samples of every class per variant")
    inference_steps: int = option(50, help="DDIM steps")
    variants: list[str] = option(help="variants", default_factory=lambda: list(VARIANTS))
    guidance_scales: list[float] = option(help="guidance scales", default_factory=lambda: [0.3, 1.0])


def parse_args(argv: list[str] | None = None) -> Options:
    tiny = {"config": "configs/tiny.yaml", "steps": 2, "per_class": 1, "inference_steps": 2}
    return parse_options(Options, argv, __doc__, tiny)


def train_variant(args: Options, name: str) -> tuple[SPMDiffusionPipeline, dict]:
    """The trained pipeline of variant `name`, and its record (training seconds, final loss, run folder)."""
    tag = name.split(" ")[0] + "_" + "_".join(VARIANTS[name].values()) if VARIANTS[name] else "spm"
    folder = os.path.join(args.out, tag)
    overrides = {"output_dir": folder, "max_train_steps": args.steps, "sample_every": args.steps * 10}
    start = time.perf_counter()
    pipeline_dir = train(load_config(args.config, {**overrides, **VARIANTS[name]}))
    train_s = time.perf_counter() - start
    pipe = SPMDiffusionPipeline.from_pretrained(pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    final_loss = read_losses(os.path.join(folder, "loss.jsonl"))[-1]["loss"]
    return pipe, {"train_s": train_s, "final_loss": final_loss, "folder": folder, "by_guidance": {}}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    base = load_config(args.config)
    judge, judge_accuracy = digits_judge(base.image_size, base.seed)
    print(f"judge: logistic regression on pixels, digits test accuracy {judge_accuracy:.3f}")
    train_bank = to_memory_bank(load_digits_dataset(image_size=base.image_size, split="train", seed=base.seed))
    results = {"settings": vars(args), "machine": describe_machine(), "judge_test_accuracy": judge_accuracy}
    results["models"] = {}
    labels = [c for c in range(10) for _ in range(args.per_class)]
    rows = []
    for name in args.variants:
        pipe, model = train_variant(args, name)
        results["models"][name] = model
        for w in args.guidance_scales:
            start = time.perf_counter()
            images = pipe(
                class_labels=labels,
                num_inference_steps=args.inference_steps,
                guidance_scale=w,
                generator=torch.Generator().manual_seed(0),
                output_type="pt",
            ).images
            sample_s = time.perf_counter() - start
            grid = os.path.join(model["folder"], f"quality_samples_w{w}.png")
            save_image_grid(images, grid, nrow=args.per_class, upscale=3)
            predicted = judge.predict(images.flatten(1).numpy())
            row = {
                "class_consistency": float(np.mean(predicted == np.array(labels))),
                "class_consistency_per_class": [
                    float(np.mean(predicted[np.array(labels) == c] == c)) for c in range(10)
                ],
                "mean_nn_distance": float(train_bank.nearest_images(images, k=1).distances[:, 0].mean()),
                "sample_s": sample_s,
            }
            model["by_guidance"][str(w)] = row
            rows.append({"model": name, "guidance_scale": w, **row, **model})
            print(f"{name}, w={w}: consistency {row['class_consistency']:.3f}, {sample_s:.0f} s")
    lines = [
        f"Digits at {base.image_size}x{base.image_size}, {args.steps} training steps (batch {base.train_batch_size}), "
        f"{args.per_class} samples per class, {args.inference_steps} DDIM steps. "
        f"Judge: logistic regression on pixels (test accuracy {judge_accuracy:.3f}).",
        "",
        table(rows, COLUMNS),
    ]
    os.makedirs(args.out, exist_ok=True)
    atomic_write_text(os.path.join(args.out, "train_quality.md"), "\n".join(lines) + "\n")
    write_json(args.json or os.path.join(args.out, "train_quality.json"), results)
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
