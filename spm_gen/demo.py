"""The demo on the bundled digits: sample from a trained SPM, remove a class and a few images from its
memory, sample again, save, reload and show what changed."""

from __future__ import annotations

import json
import logging
import os
import time

import torch

from .data import load_digits_dataset, to_memory_bank
from .memory import MemoryBank
from .utils.images import save_image_grid, save_titled_rows

logger = logging.getLogger(__name__)

DIGITS_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "digits.yaml")


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

    def read(label: int) -> list[str]:
        return bank.select(label, memory_size, generator=torch.Generator().manual_seed(seed))

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
    save_dir = os.path.join(output_dir, "memory_bank")
    t0 = time.perf_counter()
    bank.save_pretrained(save_dir)
    save_s = time.perf_counter() - t0
    reloaded = MemoryBank.from_pretrained(save_dir)
    reload_ok = (
        reloaded.ids == bank.ids
        and torch.equal(reloaded.get_images(), bank.get_images())
        and reloaded.version == bank.version
        and len(reloaded.receipts) == 2
    )
    if not reload_ok:
        raise RuntimeError(f"reloaded memory bank at {save_dir} differs from the saved one")

    receipts = [r.to_dict() for r in reloaded.receipts]
    with open(os.path.join(output_dir, "receipts.json"), "w") as f:
        json.dump(receipts, f, indent=2)
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
    with open(os.path.join(output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def train_demo_spm(output_dir: str, steps: int = 1000, config_path: str = DIGITS_CONFIG) -> str:
    """Trains the digits SPM of `configs/digits.yaml` for `steps` steps into `<output_dir>/run`."""
    from .training import load_config, parse_overrides, train

    overrides = ["--output_dir", os.path.join(output_dir, "run"), "--max_train_steps", str(steps)]
    overrides += ["--sample_every", str(steps), "--checkpointing_steps", str(steps)]
    return train(load_config(config_path, parse_overrides(overrides)))


def run_generation_demo(
    pipeline_dir: str,
    output_dir: str = "outputs/demo",
    forget_class: int = 3,
    num_removed_ids: int = 20,
    per_class: int = 8,
    memory_size: int | None = 64,
    num_inference_steps: int = 50,
    seed: int = 0,
) -> dict:
    """Samples `per_class` images of every class from a trained SPM, removes `forget_class` and
    `num_removed_ids` other training images from its memory, samples again with the same seed, saves the
    edited pipeline and reloads it. Writes `samples_before.png`, `samples_after.png` (one row per class),
    `forgotten_class.png`, `pipeline_after_removal/`, `generation_receipts.json`, `generation_summary.json`.
    """
    from pipelines import SPMDiffusionPipeline

    if not os.path.isfile(os.path.join(pipeline_dir, "model_index.json")):
        raise FileNotFoundError(
            f"no trained pipeline at '{pipeline_dir}': train one with scripts/train.py (or run `spm-gen demo` "
            "without --pipeline)"
        )
    os.makedirs(output_dir, exist_ok=True)
    pipe = SPMDiffusionPipeline.from_pretrained(pipeline_dir)
    num_classes = pipe.unet.config.num_class_embeds
    labels = [c for c in range(num_classes) for _ in range(per_class)]

    def sample() -> torch.Tensor:
        return pipe(
            class_labels=labels,
            num_inference_steps=num_inference_steps,
            memory_size=memory_size,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
        ).images

    t0 = time.perf_counter()
    before = sample()
    sample_s = time.perf_counter() - t0
    save_image_grid(before, os.path.join(output_dir, "samples_before.png"), nrow=per_class, upscale=4)
    bank = pipe.memory_bank
    receipts = [bank.remove(labels=[forget_class], reason=f"demo: forget class {forget_class}")]
    others = [i for i, lab in zip(bank.ids, bank.labels.tolist()) if lab != forget_class]
    chosen = torch.randperm(len(others), generator=torch.Generator().manual_seed(seed))[:num_removed_ids]
    receipts.append(bank.remove(ids=[others[i] for i in chosen.tolist()], reason="demo: individual removal requests"))
    after = sample()
    save_image_grid(after, os.path.join(output_dir, "samples_after.png"), nrow=per_class, upscale=4)
    rows = slice(forget_class * per_class, (forget_class + 1) * per_class)
    save_titled_rows(
        {
            f"class {forget_class}, memory holds class {forget_class}": before[rows],
            f"class {forget_class}, after `remove(labels=[{forget_class}])` (same seed)": after[rows],
        },
        os.path.join(output_dir, "forgotten_class.png"),
        title=f"Forgetting class {forget_class}: no parameter changed, only the memory",
    )
    save_dir = os.path.join(output_dir, "pipeline_after_removal")
    pipe.save_pretrained(save_dir)
    reloaded = SPMDiffusionPipeline.from_pretrained(save_dir).memory_bank
    with open(os.path.join(output_dir, "generation_receipts.json"), "w") as f:
        json.dump([r.to_dict() for r in receipts], f, indent=2)
    other_rows = [i for i in range(len(labels)) if labels[i] != forget_class]
    summary = {
        "settings": {
            "pipeline": pipeline_dir,
            "forget_class": forget_class,
            "num_removed_ids": num_removed_ids,
            "per_class": per_class,
            "memory_size": memory_size,
            "num_inference_steps": num_inference_steps,
            "seed": seed,
            "guidance_scale": 0.3,
            "unconditional_memory": "all",
        },  # fmt: skip
        "sampling_s": sample_s,
        "removal_ms": [1e3 * r.duration_s for r in receipts],
        "memory_items_after": len(reloaded),
        "class_in_saved_memory": forget_class in reloaded.class_counts(),
        "mean_abs_change_forgotten_class": (after[rows] - before[rows]).abs().mean().item(),
        "mean_abs_change_other_classes": (after[other_rows] - before[other_rows]).abs().mean().item(),
    }
    with open(os.path.join(output_dir, "generation_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary
