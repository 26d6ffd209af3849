"""The demo on the bundled digits: build a memory, read it, remove from it, save, reload, prove it."""

from __future__ import annotations

import json
import logging
import os
import time

import torch

from .data import load_digits_dataset, to_memory_bank
from .memory import MemoryBank
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
