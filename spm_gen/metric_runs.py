"""Measurement runs behind scripts/measure_*.py: sample a saved pipeline (split across processes under
`accelerate launch`), then measure on the main process and write json (numbers + settings) and pictures."""

from __future__ import annotations

import os

import torch

from .data import load_digits_dataset
from .metrics.fid import compute_fid, save_images
from .metrics.memorization import memorization
from .models.classifier_spm import load_classifier
from .sampling import load_pipeline, read_sample_folder, sample_to_folder
from .utils.benchmarking import write_json
from .utils.charts import save_distance_histogram
from .utils.images import to_unit_range
from .utils.processes import process_state


def _labels(num_images: int, classes: list[int]) -> list[int]:
    return [classes[i % len(classes)] for i in range(num_images)]


def measure_memorization(
    pipeline_dir: str, out: str, num_images: int = 200, steps: int = 50, seed: int = 0, batch_size: int = 64
) -> dict | None:
    """Samples `num_images` (classes cycling) and measures them against the pipeline's memory (its training
    set): memorization rate, extraction ratios, nearest-neighbour distances. Returns the result on the main
    process (None elsewhere); writes `memorization.json` and `nn_distances.png` to `out`."""
    pipe = load_pipeline(pipeline_dir)
    classes = list(range(pipe.unet.config.num_class_embeds))
    sample_to_folder(
        pipe, _labels(num_images, classes), os.path.join(out, "samples"), batch_size, seed, num_inference_steps=steps
    )
    if not process_state().is_main_process:
        return None
    images, _ = read_sample_folder(os.path.join(out, "samples"), pipe.unet.config.in_channels)
    report = memorization(images, pipe.memory_bank)
    result = {
        "memorization_rate": report.memorization_rate,
        "mean_nearest_distance": float(report.nearest_distance.mean()),
        "mean_extraction_ratio": float(report.extraction_ratio.mean()),
        "settings": {
            "pipeline": pipeline_dir,
            "num_images": len(images),
            "steps": steps,
            "seed": seed,
            "distance": "RMS pixel difference",
            "training_images": len(pipe.memory_bank),
            "processes": process_state().num_processes,
        },
    }
    save_distance_histogram(
        {"samples": report.nearest_distance},
        os.path.join(out, "nn_distances.png"),
        title="distance of each sample to its nearest training image",
    )
    write_json(os.path.join(out, "memorization.json"), result)  # atomic: an interrupted run leaves the old file whole
    return result


def measure_fid(
    pipeline_dir: str,
    classifier_dir: str,
    out: str,
    num_images: int = 500,
    exclude_classes: list[int] | None = None,
    oracle_dir: str | None = None,
    steps: int = 50,
    seed: int = 0,
    batch_size: int = 64,
) -> dict | None:
    """FID of the pipeline's samples of the remaining classes against the digits test split (domain
    features of the classifier in `classifier_dir`), and FID_O against the oracle's samples when
    `oracle_dir` is given. Writes `fid.json` to `out`; returns it on the main process."""
    pipe = load_pipeline(pipeline_dir)
    excluded = set(exclude_classes or [])
    classes = [c for c in range(pipe.unet.config.num_class_embeds) if c not in excluded]
    labels = _labels(num_images, classes)
    sample_to_folder(pipe, labels, os.path.join(out, "samples"), batch_size, seed, num_inference_steps=steps)
    if oracle_dir:
        sample_to_folder(
            load_pipeline(oracle_dir),
            labels,
            os.path.join(out, "oracle_samples"),
            batch_size,
            seed,
            num_inference_steps=steps,
        )
    if not process_state().is_main_process:
        return None
    size = pipe.unet.config.sample_size
    test = load_digits_dataset(image_size=size, split="test")
    test = test.subset(~torch.isin(test.labels, torch.tensor(sorted(excluded), dtype=torch.long)))
    save_images(to_unit_range(test.images), os.path.join(out, "reference"), prefix="test")
    classifier, _ = load_classifier(classifier_dir)
    result = {
        "fid_remaining_classes": compute_fid(
            os.path.join(out, "samples"), os.path.join(out, "reference"), classifier=classifier, seed=seed
        )
    }
    if oracle_dir:
        result["fid_oracle"] = compute_fid(
            os.path.join(out, "samples"), os.path.join(out, "oracle_samples"), classifier=classifier, seed=seed
        )
    result["settings"] = {
        "pipeline": pipeline_dir,
        "classifier": classifier_dir,
        "oracle": oracle_dir,
        "excluded_classes": sorted(excluded),
        "reference": "digits test split",
        "steps": steps,
        "processes": process_state().num_processes,
    }
    write_json(os.path.join(out, "fid.json"), result)  # atomic: an interrupted run leaves the old file whole
    return result
