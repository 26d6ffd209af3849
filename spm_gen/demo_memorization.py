"""The demo's memorization section: the memorization regime's models (shipped in assets/memorization, made
by benchmarks/memorization_regime.py) sampled before and after removing the training images the twin
copies most. Appends its table and pictures to the demo's report.md."""

from __future__ import annotations

import json
import logging
import os

from .paths import DIGITS_MODELS, MEMORIZATION_MODELS, require_entries
from .reporting.markdown import append_memorization_section

logger = logging.getLogger(__name__)

REGIME_FOLDERS = {
    "twin": "the parametric twin",
    "spm": "the SPM (its memory: the 100 training images)",
    "oracle_twin": "the twin retrained without the removed images",
    "oracle_spm": "the SPM retrained without them",
    "removed.json": "the removed ids, with the twin's near-copies of each",
}


def check_regime_models(models_dir: str) -> None:
    """Raises FileNotFoundError naming what `models_dir` lacks (before any work is done)."""
    require_entries(models_dir, REGIME_FOLDERS, "make them with benchmarks/memorization_regime.py")


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
    from .reporting.memorization_regime import RegimeMeasurements, RegimeSettings, make_reference
    from .sampling import load_pipeline

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
    measured = RegimeMeasurements(reference, settings, spm.unet.config.num_class_embeds, work)
    measured.add("twin", "before", load_pipeline(os.path.join(models_dir, "twin")))
    measured.add("spm", "before", spm)
    receipt = spm.memory_bank.remove(ids=removed, reason="demo: the memorization regime")
    measured.add("spm deletion", "after", spm)
    measured.add("oracle twin", "after", load_pipeline(os.path.join(models_dir, "oracle_twin")))
    measured.add("oracle spm", "after", load_pipeline(os.path.join(models_dir, "oracle_spm")))
    titles = [f"removed id {item} (class {label})" for item, label in zip(removed, labels)]
    summary = {
        "settings": {"models_dir": models_dir, "judge_dir": judge_dir, **vars(settings)},
        "removed": chosen,
        "removed_labels": labels,
        "spm_deletion_s": receipt.duration_s,
        "records": measured.records,
        "pictures": measured.save_pictures(titles, os.path.join(work, "pictures")),
    }
    with open(os.path.join(work, "memorization.json"), "w") as f:
        json.dump(summary, f, indent=2)
    append_memorization_section(os.path.join(output_dir, "report.md"), summary)
    return summary
