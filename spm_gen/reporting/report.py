"""`spm-gen report`: sample the SPM (and its twin, and the oracle) before and after a removal, measure,
and write a folder of pictures, `report.json` and `report.md`."""

from __future__ import annotations

import json
import logging
import os
import platform

import torch
from accelerate import PartialState

from ..memory.bank import MemoryBank
from ..memory.saved_folder import SavedFolder
from ..metrics.memorization import save_distance_histogram
from ..models.classifier_spm import load_classifier
from ..sampling import load_pipeline
from ..unlearning.twin import forget_and_remain
from .config import ReportConfig
from .generations import Generations, sample_generations
from .markdown import sanity_warnings, write_report
from .measures import Judge, RemovedData, fid_references, measure_row
from .pictures import save_class_grids, save_removed_gallery

logger = logging.getLogger(__name__)


def machine() -> str:
    device = PartialState().device
    cpu = f"{os.cpu_count()}-core {platform.machine()} CPU"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return f"{name}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def removed_data(bank: MemoryBank, config: ReportConfig) -> RemovedData:
    """The items the request names, read before anything changes (unknown ids or classes: ValueError)."""
    ids = bank.resolve_ids(ids=config.remove_ids or None, labels=config.remove_classes or None)
    return RemovedData(ids, bank.get_images(ids).cpu(), bank.get_labels(ids), sorted(config.remove_classes))


def run_report(config: ReportConfig) -> dict:
    """Runs the whole report into `config.output_dir`; returns the summary also written to `report.json`.
    When it fails, the folders it created and left empty are deleted again."""
    config.check()
    created = not os.path.exists(config.output_dir)
    os.makedirs(config.output_dir, exist_ok=True)
    try:
        return _run_report(config, config.output_dir)
    except BaseException:
        if created:
            remove_empty_folders(config.output_dir)
        raise


def remove_empty_folders(top: str) -> None:
    """Deletes `top` and the folders under it that hold no file (bottom up)."""
    for root, _, _ in os.walk(top, topdown=False):
        if not os.listdir(root):
            os.rmdir(root)


def _run_report(config: ReportConfig, out: str) -> dict:
    spm = load_pipeline(config.pipeline_dir)
    if spm.memory_bank is None:
        raise ValueError(f"'{config.pipeline_dir}' has no memory bank: give the SPM pipeline, not its twin")
    if config.compile_fusion and spm.unet.config.fusion_type == "additive":
        spm.unet.compile_fusion()
    training = SavedFolder(config.pipeline_dir).load_bank()
    removed = removed_data(training, config)
    judge = Judge(*load_classifier(config.classifier_dir)) if config.classifier_dir else None
    num_classes = spm.unet.config.num_class_embeds
    labels = [i % num_classes for i in range(config.num_images)]
    kwargs = {"num_inference_steps": config.num_inference_steps, "batch_size": config.batch_size, "seed": config.seed}
    samples = os.path.join(out, "samples")
    scales, roles = {}, {}  # each model's guidance scale (the config's, or the model's own default) and role

    def sample(name: str, pipe, role: str) -> Generations:
        w = pipe.config.default_guidance_scale if config.guidance_scale is None else config.guidance_scale
        logger.info("sampling %d images: %s (guidance %s)", len(labels), name, w)
        scales[name], roles[name] = w, role
        reads = pipe.memory_bank is not None
        extra = {"memory_size": config.memory_size, "empty_memory": config.empty_memory} if reads else {}
        return sample_generations(name, pipe, labels, os.path.join(samples, role), guidance_scale=w, **kwargs, **extra)

    models = [sample("SPM before removal", spm, "spm_before")]
    receipt = spm.memory_bank.remove(ids=removed.ids, reason="spm-gen report")
    logger.info("removed %d memory items in %.2f ms", len(removed.ids), 1e3 * receipt.duration_s)
    spm.save_pretrained(os.path.join(out, "spm_after_removal"))
    models.append(sample("SPM after removal", spm, "spm_after"))
    times = {models[0].name: None, models[1].name: receipt.duration_s}
    if config.twin_dir:
        twin = load_pipeline(config.twin_dir)
        models.append(sample("twin before", twin, "twin_before"))
        logger.info("unlearning the twin: %s, %d steps", config.twin.title, config.twin.steps)
        unlearned, seconds = config.twin.apply(twin, *forget_and_remain(training, removed.ids), config.seed)
        models.append(sample(f"twin after {config.twin.title}", unlearned, "twin_after"))
        times.update({models[2].name: None, models[3].name: seconds})
    oracle = None
    if config.oracle_dir:
        oracle = sample("oracle (retrained without)", load_pipeline(config.oracle_dir), "oracle")

    rows, distances = [], {}
    work = os.path.join(out, "fid_inputs")
    references = fid_references(training, removed, work, oracle) if judge is not None else {}
    for gen in models + ([oracle] if oracle else []):
        own = {k: v for k, v in references.items() if gen is not oracle or k != "oracle"}
        row, d = measure_row(gen, training, removed, work, config.near_copy_threshold, judge, own, config.seed)
        row["removal_s"] = times.get(gen.name)
        row["guidance_scale"] = scales[gen.name]
        row["role"] = roles[gen.name]
        rows.append(row)
        distances[gen.name] = d
    pictures = {
        "Samples per class (rows: models; same seeds)": save_class_grids(
            models + ([oracle] if oracle else []), num_classes, os.path.join(out, "grids")
        ),
        "Removed images and their nearest generations": [
            save_removed_gallery(
                removed, models[i], models[i + 1], os.path.join(out, f"gallery_{tag}.png"), count=config.gallery_size
            )
            for i, tag in ((0, "spm"), (2, "twin"))
            if i + 1 < len(models)
        ],
        "Distances": [
            save_distance_histogram(
                {n: d["nearest_training"] for n, d in distances.items()},
                os.path.join(out, "hist_nearest_training.png"),
                title="each generation's distance to its nearest training image",
            ),
            save_distance_histogram(
                {n: d["nearest_removed"] for n, d in distances.items()},
                os.path.join(out, "hist_nearest_removed.png"),
                title="each generation's distance to its nearest removed image",
                xlabel="distance to the nearest removed image (RMS pixel difference)",
                threshold=config.near_copy_threshold,
            ),
        ],
    }
    summary = {
        "rows": rows,
        "removal": {
            "num_items": len(removed.ids),
            "classes": removed.classes,
            "individual_ids": [i for i, lab in zip(removed.ids, removed.labels.tolist()) if lab not in removed.classes],
            "ids": removed.ids,
            "receipt": receipt.to_dict(),
        },
        "config": config.to_dict(),
        "machine": machine(),
        "warnings": sanity_warnings(rows),
    }
    for warning in summary["warnings"]:
        logger.warning("warning: %s", warning)
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(summary, f, indent=2)
    write_report(os.path.join(out, "report.md"), summary, pictures)
    logger.info("report: %s", os.path.join(out, "report.md"))
    return summary
