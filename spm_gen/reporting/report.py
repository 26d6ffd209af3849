"""`spm-gen report`: sample the SPM (and its twin, and the oracle) before and after a removal, measure,
and write a folder of pictures, `report.json` and `report.md`."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace

from ..memory.bank import MemoryBank
from ..memory.saved_folder import SavedFolder
from ..models.classifier_spm import load_classifier
from ..sampling import load_pipeline
from ..unlearning.twin import forget_and_remain
from ..utils.atomic import atomic_write_text
from ..utils.benchmarking import describe_machine
from ..utils.charts import save_distance_histogram
from ..utils.processes import process_state
from .comparison import Comparison, ComparisonResult, SamplingPlan, TwinBaseline, run_comparison
from .config import ReportConfig
from .markdown import sanity_warnings, write_report
from .measures import REPORT_TABLE, units
from .pictures import save_class_grids, save_removed_gallery
from .report_rows import Judge, RemovedData, RowContext, fid_references, report_row
from .roles import BEFORE_AFTER, Role

logger = logging.getLogger(__name__)

NAMES = {  # each model's name in the table and the pictures
    Role.SPM_BEFORE: "SPM before removal",
    Role.SPM_AFTER: "SPM after removal",
    Role.TWIN_BEFORE: "twin before",
    Role.ORACLE: "oracle (retrained without)",
}


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
        spm.unet.compile_fusion(dynamic=True)  # on a CPU: the native kernel
    training = SavedFolder(config.pipeline_dir).load_bank()  # the training set: the memory before the removal
    removed = removed_data(training, config)
    judge = Judge(*load_classifier(config.classifier_dir)) if config.classifier_dir else None
    result = run_comparison(report_comparison(config, spm, training, removed), sampling_plan(config, spm, out))
    spm.save_pretrained(os.path.join(out, "spm_after_removal"))
    rows, distances = measure_runs(result, training, removed, judge, config, os.path.join(out, "fid_inputs"))
    summary = {
        "rows": rows,
        "units": units(REPORT_TABLE),
        "removal": {
            "num_items": len(removed.ids),
            "classes": removed.classes,
            "individual_ids": [i for i, lab in zip(removed.ids, removed.labels.tolist()) if lab not in removed.classes],
            "ids": removed.ids,
            "receipt": result.receipt.to_dict(),
        },
        "config": config.to_dict(),
        "machine": describe_machine(process_state().device),
        "warnings": sanity_warnings(rows),
    }
    for warning in summary["warnings"]:
        logger.warning("warning: %s", warning)
    atomic_write_text(os.path.join(out, "report.json"), json.dumps(summary, indent=2))
    pictures = save_pictures(result, removed, distances, config, out)
    write_report(os.path.join(out, "report.md"), summary, pictures)
    logger.info("report: %s", os.path.join(out, "report.md"))
    return summary


def report_comparison(config: ReportConfig, spm, training: MemoryBank, removed: RemovedData) -> Comparison:
    """The report's models: the SPM, the twin unlearned by `config.twin`, the oracle (those given)."""
    twin = None
    if config.twin_dir:
        methods = {Role.TWIN_AFTER: config.twin}
        twin = TwinBaseline(load_pipeline(config.twin_dir), *forget_and_remain(training, removed.ids), methods)
    return Comparison(
        spm,
        {"ids": removed.ids},
        "spm-gen report",
        twin=twin,
        oracles={Role.ORACLE: load_pipeline(config.oracle_dir)} if config.oracle_dir else {},
        names={**NAMES, Role.TWIN_AFTER: f"twin after {config.twin.title}"},
    )


def sampling_plan(config: ReportConfig, spm, out: str) -> SamplingPlan:
    """`num_images` generations per model, classes cycling, into `out/samples/<role>`."""
    num_classes = spm.unet.config.num_class_embeds
    labels = [i % num_classes for i in range(config.num_images)]
    return SamplingPlan(labels, os.path.join(out, "samples"), config)


def measure_runs(result: ComparisonResult, training, removed, judge, config: ReportConfig, work: str):
    """The table's rows, in the order the models were sampled, and each model's per-sample distances."""
    oracle = result.get(Role.ORACLE)
    references = fid_references(training, removed, work, oracle.generations if oracle else None) if judge else {}
    rows, distances = [], {}
    context = RowContext(training, removed, work, config.near_copy_threshold, judge, references, config.seed)
    for run in result.runs.values():
        own = {k: v for k, v in references.items() if run.role != Role.ORACLE or k != "oracle"}
        gen = run.generations
        row, d = report_row(gen, replace(context, references=own))
        row.update(removal_s=run.seconds, guidance_scale=run.guidance_scale, role=run.role)
        rows.append(row)
        distances[gen.name] = d
    return rows, distances


def save_pictures(result: ComparisonResult, removed, distances: dict, config: ReportConfig, out: str) -> dict:
    """The report's pictures by section: class grids, galleries of removed images, distance histograms."""
    generations = [run.generations for run in result.runs.values()]
    num_classes = result[Role.SPM_BEFORE].pipe.unet.config.num_class_embeds
    galleries = [
        save_removed_gallery(
            removed,
            result[before].generations,
            result[after].generations,
            os.path.join(out, f"gallery_{tag}.png"),
            count=config.gallery_size,
        )
        for tag, (before, after) in BEFORE_AFTER.items()
        if after in result.runs
    ]
    histograms = [
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
    ]
    return {
        "Samples per class (rows: models; same seeds)": save_class_grids(
            generations, num_classes, os.path.join(out, "grids")
        ),
        "Removed images and their nearest generations": galleries,
        "Distances": histograms,
    }
