"""The demo on the bundled digits: a bare memory bank (select, remove, save, reload), then the removal
report on a trained SPM, its parametric twin, the oracle and the judge classifier."""

from __future__ import annotations

import json
import logging
import os
import time

import torch

from .data import load_digits_dataset, to_memory_bank
from .memory import MemoryBank
from .memory.readout import class_readout
from .memory.saved_folder import SavedFolder
from .paths import DIGITS_MODELS, WHERE_MODELS_ARE, require_entries
from .utils.atomic import atomic_write_text
from .utils.images import save_titled_rows

logger = logging.getLogger(__name__)


def run_memory_demo(
    output_dir: str = "outputs/demo",
    image_size: int = 8,
    query_class: int = 3,
    memory_size: int = 16,
    num_removed_ids: int = 5,
    seed: int = 0,
) -> dict:
    """Builds a memory bank from the digits, selects memory for `query_class`, removes that class and
    `num_removed_ids` other items, saves, reloads and checks the reload. Writes to `output_dir`:
    `memory_bank/` (the saved bank), `receipts.json`, `before_after.png` and `summary.json`.

    Returns:
        The summary (also in `summary.json`).
    """
    os.makedirs(output_dir, exist_ok=True)
    bank = to_memory_bank(load_digits_dataset(image_size=image_size))
    logger.info("memory bank from the digits: %d items, class counts %s", len(bank), bank.class_counts())

    def read(label: int) -> list[str]:  # what a class-`label` sample reads (an emptied class: the fallback)
        return class_readout(bank, torch.tensor([label]), memory_size, torch.Generator().manual_seed(seed)).read[0]

    before = read(query_class)
    other_class = (query_class + 1) % 10
    before_other = read(other_class)
    logger.info("a class-%d query reads %d memory items: %s ...", query_class, len(before), before[:5])
    before_images = {
        f"class {query_class} query reads (before)": bank.get_images(before),
        f"class {other_class} query reads (before)": bank.get_images(before_other),
    }

    class_receipt = bank.remove(labels=[query_class], reason=f"demo: forget class {query_class}")
    removed_ids = before_other[:num_removed_ids]
    ids_receipt = bank.remove(ids=removed_ids, reason="demo: individual removal requests")
    for receipt in (class_receipt, ids_receipt):
        logger.info(
            "removed %d items (%s) in %.2f ms", len(receipt.removed_ids), receipt.reason, 1e3 * receipt.duration_s
        )

    after, after_other = read(query_class), read(other_class)
    saved = SavedFolder(output_dir)
    t0 = time.perf_counter()
    saved.save_bank(bank)
    save_s = time.perf_counter() - t0
    reloaded = saved.load_bank()
    reload_ok = (
        reloaded.ids == bank.ids
        and torch.equal(reloaded.get_images(), bank.get_images())
        and reloaded.version == bank.version
        and len(reloaded.receipts) == 2
    )
    if not reload_ok:
        raise RuntimeError(f"reloaded memory bank at {saved.bank_dir} differs from the saved one")

    receipts = [r.to_dict() for r in reloaded.receipts]
    atomic_write_text(os.path.join(output_dir, "receipts.json"), json.dumps(receipts, indent=2))
    picture = save_titled_rows(
        {
            **before_images,
            f"class {query_class} query reads (after removing class {query_class}: falls back to all items)": (
                reloaded.get_images(after)
            ),
            f"class {other_class} query reads (after removing {num_removed_ids} of its items)": reloaded.get_images(
                after_other
            ),
        },
        os.path.join(output_dir, "before_after.png"),
        title="What a query reads from memory, before and after removal",
    )
    summary = {
        "settings": {
            "dataset": "sklearn digits",
            "image_size": image_size,
            "query_class": query_class,
            "memory_size": memory_size,
            "num_removed_ids": num_removed_ids,
            "seed": seed,
        },
        "items_before": len(class_receipt.removed_ids) + len(ids_receipt.removed_ids) + len(reloaded),
        "items_after": len(reloaded),
        "removed_class_items": len(class_receipt.removed_ids),
        "removed_ids": removed_ids,
        "removal_ms": {"class": 1e3 * class_receipt.duration_s, "ids": 1e3 * ids_receipt.duration_s},
        "save_s": save_s,
        "class_still_in_memory": query_class in reloaded.class_counts(),
        "removed_ids_still_in_memory": [i for i in removed_ids if i in reloaded],
        "reload_identical": reload_ok,
        "picture": picture,
    }
    atomic_write_text(os.path.join(output_dir, "summary.json"), json.dumps(summary, indent=2))
    return summary


MODEL_FOLDERS = {
    "spm": "the SPM",
    "twin": "its parametric twin",
    "oracle": "the twin retrained without class 3",
    "judge": "the judge classifier",
}


def individual_removals(bank: MemoryBank, forget_class: int, count: int, seed: int = 0) -> list[str]:
    """The demo's individual removal requests: `count` seeded ids of items outside `forget_class`."""
    others = [i for i, label in zip(bank.ids, bank.labels.tolist()) if label != forget_class]
    chosen = torch.randperm(len(others), generator=torch.Generator().manual_seed(seed))[:count]
    return [others[i] for i in sorted(chosen.tolist())]


def check_demo_models(models_dir: str) -> None:
    """Raises FileNotFoundError naming each demo model `models_dir` lacks, and where the shipped ones are."""
    folders = {f"{name}/": what for name, what in MODEL_FOLDERS.items()}
    how = f"{WHERE_MODELS_ARE}; or train them with `make demo-train` (bash scripts/train_demo_models.sh DIR)"
    require_entries(models_dir, folders, how)


def run_forgetting_demo(
    models_dir: str = DIGITS_MODELS,
    output_dir: str = "outputs/demo",
    forget_class: int = 3,
    num_removed_ids: int = 20,
    num_images: int = 300,
    num_inference_steps: int = 50,
    compile_fusion: bool = True,
    seed: int = 0,
) -> dict:
    """The removal report of `spm_gen.reporting` on the demo models in `models_dir` (`spm/`, `twin/`,
    `oracle/`, `judge/`: made by scripts/train_demo_models.sh): removes `forget_class` and
    `num_removed_ids` seeded training images of other classes, and writes `report.md` to `output_dir`."""
    from .reporting import ReportConfig, run_report

    check_demo_models(models_dir)
    bank = SavedFolder(os.path.join(models_dir, "spm")).load_bank()
    config = ReportConfig(
        pipeline_dir=os.path.join(models_dir, "spm"),
        output_dir=output_dir,
        remove_classes=[forget_class],
        remove_ids=individual_removals(bank, forget_class, num_removed_ids, seed),
        classifier_dir=os.path.join(models_dir, "judge"),
        oracle_dir=os.path.join(models_dir, "oracle"),
        twin_dir=os.path.join(models_dir, "twin"),
        num_images=num_images,
        num_inference_steps=num_inference_steps,
        compile_fusion=compile_fusion,
        seed=seed,
    )
    return run_report(config)
