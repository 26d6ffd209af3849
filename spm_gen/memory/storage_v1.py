"""Reading the first on-disk format (until 2026-11): one `bank-<token>.safetensors` with every row and one
`items-<token>.json` with their ids and hashes, named by `_data_file` / `_items_file` in config.json. Saving
always writes the current format (`spm_gen.memory.storage`), which replaces these files."""

from __future__ import annotations

import json
import logging
import os
import re

from safetensors import SafetensorError
from safetensors.torch import load_file

from .storage_checks import ShardData, check_ids, check_labels, check_regular_file, check_tensors, corrupted

logger = logging.getLogger(__name__)

FILE_KEYS = ("_data_file", "_items_file")
_FILES = re.compile(r"^(bank-[0-9a-f]{12}\.safetensors|items-[0-9a-f]{12}\.json)$")


def read_v1(directory: str, config: dict) -> ShardData:
    """The one shard of a first-format save; `ValueError` naming the problem."""
    for key in FILE_KEYS:
        name = config.get(key)
        if not isinstance(name, str) or not _FILES.match(name):
            raise corrupted(directory, f"config.json field {key}={name!r} is not a data file of this folder")
    data_file, items_file = config["_data_file"], config["_items_file"]
    check_regular_file(directory, data_file)
    check_regular_file(directory, items_file)
    try:
        tensors = load_file(os.path.join(directory, data_file))
    except (FileNotFoundError, SafetensorError, OSError) as e:
        raise corrupted(directory, f"cannot read {data_file} ({e})") from e
    try:
        with open(os.path.join(directory, items_file), encoding="utf-8") as f:
            items = json.load(f)
        ids, hashes = items["ids"], items["hashes"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as e:
        raise corrupted(directory, f"cannot read {items_file} ({e!r})") from e
    check_ids(directory, ids, hashes)
    check_tensors(
        directory, data_file, tensors, {"commit": config["_num_items"], "ids": len(ids), "hashes": len(hashes)}
    )
    check_labels(directory, ids, tensors["labels"], config.get("_items_digest"))
    return ShardData(tensors, ids, hashes)


def warn_first_format(directory: str, config: dict, verify: bool) -> None:
    """Says what a load of a first-format folder could check and what it could not: its labels and ids carry
    a digest only when the save recorded one, and its embeddings never do."""
    checked = ["ids unique", "counts"] + (["every image's content hash"] if verify else [])
    unchecked = ["embeddings"] + ([] if config.get("_items_digest") else ["labels and ids (a changed label loads)"])
    logger.warning(
        "'%s' is a memory bank in the first format: checked %s; not checkable: %s. Save it again "
        "(MemoryBank.from_pretrained(path).save_pretrained(path), or any removal) to convert it: the current "
        "format covers all of them",
        directory,
        ", ".join(checked),
        ", ".join(unchecked),
    )
