"""Why does the SPM's FID differ from its twin's? Reads the sample folders `quality_parity.py` wrote and
splits each setting's FID into where the samples sit (the mean term) and how they spread (the covariance
term), in the judge's features, with the spread of the samples themselves per class.

    python benchmarks/quality_parity_analysis.py runs/parity/s1 runs/parity/s2 [--judge assets/digits/judge]

First lines: the floor (the training images resampled to the samples' count, three draws) and held-out
digits (the test split). Columns: FID = mean term + covariance term; "spread" = the mean distance of a class's samples to their own
class mean in the judge's features, over classes, relative to the training images' (1.0 = as spread out as
the training data); "nearest training" = the mean RMS pixel distance of a sample to its nearest training
image.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from spm_gen.data import load_digits_dataset
from spm_gen.memory.bank import MemoryBank
from spm_gen.metrics.fid import fid_terms, folder_features, save_images, save_png
from spm_gen.models.classifier_spm import load_classifier
from spm_gen.reporting.measures import Measure, table
from spm_gen.sampling import read_sample_folder
from spm_gen.utils.benchmarking import BenchmarkOptions, describe_machine, parse_options, write_json
from spm_gen.utils.dataclass_options import option
from spm_gen.utils.images import to_unit_range
from spm_gen.utils.validation import check_values


def class_spread(features: np.ndarray, labels: np.ndarray) -> float:
    """The mean distance of each item to its class's mean feature, averaged over classes."""
    spreads = []
    for c in np.unique(labels):
        f = features[labels == c]
        spreads.append(float(np.linalg.norm(f - f.mean(axis=0), axis=1).mean()))
    return float(np.mean(spreads))


COLUMNS = [
    Measure("setting", "setting"),
    Measure("fid", "FID", better="lower", fmt=".3f"),
    Measure("mean", "mean term", fmt=".3f"),
    Measure("covariance", "covariance term", fmt=".3f"),
    Measure("spread", "spread (vs training)", fmt=".3f"),
    Measure("nearest", "nearest training", "RMS", fmt=".4f"),
]


def tiny_outs(folder: str, training, count: int) -> list[str]:
    """A stand-in for quality_parity.py's --out (its tiny mode samples 8x8 models, which the 16x16 judge cannot
    read): the training images as the reference, `count` held-out digits as one setting's samples."""
    save_images(to_unit_range(training.images), os.path.join(folder, "reference"), prefix="train")
    test = load_digits_dataset(image_size=training.images.shape[-1], split="test")
    samples = os.path.join(folder, "samples", "held_out")
    os.makedirs(samples)
    for i, (image, label) in enumerate(zip(to_unit_range(test.images[:count]), test.labels.tolist())):
        save_png(image, os.path.join(samples, f"{i:06d}_class{label}.png"))  # as sample_to_folder names them
    return [folder]


@dataclass
class Options(BenchmarkOptions):
    outs: list[str] | None = option(
        None, help="--out folders of quality_parity.py (each has samples/, reference/)", flag="outs", nargs="*"
    )
    judge: str = option("assets/digits/judge", help="the classifier whose features FID uses")
    num_images: int = option(2000, help="skip folders with another count (unfinished)")

    def check(self) -> None:
        hint = ": give the --out folders of quality_parity.py (or --tiny)"
        check_values(self, {"outs": bool(self.outs) or self.tiny}, {"outs": hint})


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_options(Options, argv, __doc__, {"num_images": 30})
    judge, _ = load_classifier(args.judge)
    training = load_digits_dataset(image_size=judge.config.image_size, split="train")
    if args.tiny:
        args.outs = tiny_outs(tempfile.mkdtemp(prefix="parity_analysis_"), training, args.num_images)
    bank = MemoryBank.from_images(training.images, training.labels, training.ids)
    reference = folder_features(os.path.join(args.outs[0], "reference"), classifier=judge)
    # the reference folder holds the training images in dataset order, so its labels are the dataset's
    base_spread = class_spread(reference, training.labels.numpy())
    rng = np.random.default_rng(0)
    for draw in range(3):  # the floor: the training images themselves, resampled to the samples' count
        terms = fid_terms(reference[rng.integers(0, len(reference), args.num_images)], reference)
        print(f"floor, training images resampled ({draw}): FID {terms['fid']:.3f} (mean term {terms['mean']:.3f})")
    test = load_digits_dataset(image_size=judge.config.image_size, split="test")
    test_folder = save_images(to_unit_range(test.images), os.path.join(args.outs[0], "test_split"), prefix="test")
    terms = fid_terms(folder_features(test_folder, classifier=judge), reference)
    print(f"held-out digits (test split, {len(test)} images): FID {terms['fid']:.3f} (mean term {terms['mean']:.3f})")
    rows = []
    for out in args.outs:
        for name in sorted(os.listdir(os.path.join(out, "samples"))):
            folder = os.path.join(out, "samples", name)
            count = len(os.listdir(folder))
            if count != args.num_images:
                print(f"skipped {folder}: {count} images, not {args.num_images}")
                continue
            features = folder_features(folder, classifier=judge)
            images, labels = read_sample_folder(folder, judge.config.in_channels)
            terms = fid_terms(features, reference)
            spread = class_spread(features, np.array(labels)) / base_spread
            nearest = bank.nearest_images(images, k=1).distances[:, 0].mean().item()
            rows.append({"setting": name, **terms, "spread": spread, "nearest": nearest})
    print(table(rows, COLUMNS))
    if args.json:
        write_json(args.json, {"settings": vars(args), "machine": describe_machine(), "rows": rows})
    return rows


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
