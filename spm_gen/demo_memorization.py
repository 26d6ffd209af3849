"""The demo's memorization section: the memorization regime's models (shipped in assets/memorization, made
by benchmarks/memorization_regime.py) sampled before and after removing the training images the twin
copies most. Appends its table and pictures to the demo's report.md."""

from __future__ import annotations

import json
import logging
import os

from .paths import DIGITS_MODELS, MEMORIZATION_MODELS, WHERE_MODELS_ARE, require_entries
from .reporting.markdown import append_memorization_section
from .reporting.roles import Role
from .utils.atomic import atomic_write_text

logger = logging.getLogger(__name__)

REGIME_FOLDERS = {
    "twin": "the parametric twin",
    "spm": "the SPM (its memory: the 100 training images)",
    "oracle_twin": "the twin retrained without the removed images",
    "oracle_spm": "the SPM retrained without them",
    "removed.json": "the removed ids, with the twin's near-copies of each",
    "complete_forgetting/spm": "the SPM trained with half of every class memory-only",
    "complete_forgetting/oracle_spm": "that SPM retrained without its removed images",
    "complete_forgetting/removed.json": "its removed ids (memory-only items the twin copies)",
}
FORGETTING_NAME = "spm, memory-only half"
FORGETTING_ROWS = {
    Role.TWIN_BEFORE: ("twin", "before"),  # the baseline's generations: they do not depend on what is removed
    Role.SPM_BEFORE: (FORGETTING_NAME, "before"),
    Role.SPM_AFTER: (FORGETTING_NAME, "after"),
    Role.ORACLE_SPM: (f"oracle ({FORGETTING_NAME})", "after"),
}


def check_regime_models(models_dir: str) -> None:
    """Raises FileNotFoundError naming what `models_dir` lacks (before any work is done)."""
    require_entries(
        models_dir, REGIME_FOLDERS, f"{WHERE_MODELS_ARE}; or make them with benchmarks/memorization_regime.py"
    )


def run_memorization_demo(
    models_dir: str = MEMORIZATION_MODELS,
    output_dir: str = "outputs/demo",
    judge_dir: str = os.path.join(DIGITS_MODELS, "judge"),
    per_class: int = 20,
    num_inference_steps: int = 50,
    seed: int = 0,
) -> dict:
    """Samples the twin and the SPM, deletes the removed images from the SPM's memory, samples it again and
    both oracles (`per_class` samples of every class, the same seeds for every model), and measures each
    (`spm_gen.reporting.memorization_regime`). Writes `memorization/` (samples, `memorization.json`,
    pictures) under `output_dir` and appends a section to its `report.md`.

    Returns:
        The summary (also in `memorization.json`).
    """
    from .models.classifier_spm import load_classifier
    from .reporting.comparison import Comparison, TwinBaseline, run_comparison
    from .reporting.memorization_regime import (
        ROWS,
        TWIN_METHODS,
        RegimeMeasurements,
        RegimeSettings,
        make_reference,
        run_names,
        sampling_plan,
    )
    from .sampling import load_pipeline

    rows = {role: row for role, row in ROWS.items() if role not in TWIN_METHODS}  # the twin is not unlearned

    check_regime_models(models_dir)
    with open(os.path.join(models_dir, "removed.json")) as f:
        chosen: dict[str, int] = json.load(f)
    removed = list(chosen)
    settings = RegimeSettings(
        per_class=per_class, num_removed=len(removed), num_inference_steps=num_inference_steps, seed=seed
    )
    settings.check()
    work = os.path.join(output_dir, "memorization")
    spm = load_pipeline(os.path.join(models_dir, "spm"))
    labels = spm.memory_bank.get_labels(removed).tolist()
    reference = make_reference(spm.memory_bank, removed, load_classifier(judge_dir)[0], work)
    measured = RegimeMeasurements(reference, settings)
    comparison = Comparison(
        spm,
        {"ids": removed},
        "demo: the memorization regime",
        twin=TwinBaseline(load_pipeline(os.path.join(models_dir, "twin"))),  # sampled, not unlearned
        oracles={role: load_pipeline(os.path.join(models_dir, role)) for role in (Role.ORACLE_TWIN, Role.ORACLE_SPM)},
        names=run_names(rows),
    )
    plan = sampling_plan(settings, spm.unet.config.num_class_embeds, os.path.join(work, "samples"))
    result = run_comparison(comparison, plan)
    measured.add_rows(result, rows)
    receipt = result.receipt
    titles = [f"removed id {item} (class {label})" for item, label in zip(removed, labels)]
    summary = {
        "settings": {"models_dir": models_dir, "judge_dir": judge_dir, **vars(settings)},
        "removed": chosen,
        "removed_labels": labels,
        "spm_deletion_s": receipt.duration_s,
        "records": measured.records,
        "pictures": measured.save_pictures(titles, os.path.join(work, "pictures")),
    }
    forgetting = complete_forgetting_section(models_dir, result[Role.TWIN_BEFORE], plan, settings, reference.judge)
    summary["complete_forgetting"] = forgetting
    atomic_write_text(os.path.join(work, "memorization.json"), json.dumps(summary, indent=2))
    report = os.path.join(output_dir, "report.md")
    append_memorization_section(report, summary)
    append_memorization_section(report, forgetting, title="Complete forgetting: the memory-only split")
    return summary


def complete_forgetting_section(models_dir: str, twin, plan, settings, judge) -> dict:
    """The same measurement for the SPM trained with half of every class memory-only, its removed images
    chosen among those memory-only items that the twin copies: the twin's generations of the baseline (`twin`,
    a `ModelRun`) measured against them, that SPM before and after deleting them from memory, and its oracle
    (sampled by `plan`, into its folder's complete_forgetting/)."""
    from dataclasses import replace

    from .reporting.comparison import Comparison, run_comparison
    from .reporting.memorization_regime import RegimeMeasurements, make_reference, run_names
    from .sampling import load_pipeline

    folder = os.path.join(models_dir, "complete_forgetting")
    with open(os.path.join(folder, "removed.json")) as f:
        chosen: dict[str, int] = json.load(f)
    removed = list(chosen)
    spm = load_pipeline(os.path.join(folder, "spm"))
    labels = spm.memory_bank.get_labels(removed).tolist()
    cf_work = os.path.join(os.path.dirname(plan.folder), "complete_forgetting")
    reference = make_reference(spm.memory_bank, removed, judge, cf_work)
    measured = RegimeMeasurements(reference, settings)
    comparison = Comparison(
        spm,
        {"ids": removed},
        "demo: complete forgetting",
        oracles={Role.ORACLE_SPM: load_pipeline(os.path.join(folder, "oracle_spm"))},
        names=run_names(FORGETTING_ROWS),
    )
    result = run_comparison(comparison, replace(plan, folder=os.path.join(cf_work, "samples")))
    measured.add_rows({Role.TWIN_BEFORE: twin, **result.runs}, FORGETTING_ROWS)
    receipt = result.receipt
    titles = [f"memory-only half: removed id {item} (class {label})" for item, label in zip(removed, labels)]
    return {
        "settings": {"models_dir": folder, **vars(settings)},
        "removed": chosen,
        "removed_labels": labels,
        "was_training_target": receipt.was_training_target,
        "spm_deletion_s": receipt.duration_s,
        "records": measured.records,
        "pictures": measured.save_pictures(titles, os.path.join(cf_work, "pictures")),
    }
