"""On-disk format of a memory bank: safetensors + json, committed atomically.

A save folder holds:

- `bank-<token>.safetensors`: `images` (uint8, N x C x H x W), `labels` (int64, N), optional `embeddings`.
- `items-<token>.json`: `ids` and `hashes` (sha256 of each image's uint8 CHW bytes), aligned with rows.
- `receipts-<token>.jsonl`: the bank's whole removal log, one receipt per line (ids and hashes, never
  pixels); each save appends the receipts of its removals to the log it was loaded with.
- `config.json`: the bank's config plus the commit record (`_data_file`, `_items_file`,
  `_receipts_file`, `_num_items`, `_version`). Replacing it with `os.replace` is the commit point.

A save writes new, uniquely named files, then commits `config.json`, and only then deletes the files the
new commit does not name. A crash at any point leaves a folder whose `config.json` names complete files:
the previous save or the new one. Every file is written under a name the bank chose (the safetensors bytes
too: safetensors' own writer would leave `.tmpXXXXXX` files nobody could recognise), and a save holds the
folder's lock (`.spm-gen.lock`) throughout, so the next load or save that finds the lock free deletes what
a killed save left: its temporary files and the previous commit's data files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..utils.atomic import atomic_write, atomic_write_text, fsync_dir
from ..utils.locks import LockBusy, folder_lock
from .items import content_hashes, preview
from .rows import RowStore

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
_OWN_FILE = r"(bank-[0-9a-f]{12}\.safetensors|items-[0-9a-f]{12}\.json|receipts-[0-9a-f]{12}\.jsonl)"
_OWN_DATA = re.compile(rf"^{_OWN_FILE}$")  # the data files a save writes
_OWN_TMP = re.compile(rf"^\.({_OWN_FILE}|config\.json)\.[0-9a-f]{{8}}\.tmp$")  # their temporary files (atomic_write)


@dataclass(frozen=True)
class BankRecord:
    """A bank's json side: row-aligned ids and content hashes, the removal log, version, embedding info."""

    ids: list[str]
    hashes: list[str]
    receipts: list[dict]
    version: str
    embedding_info: dict | None


@dataclass
class StoredBank:
    """What one committed save holds: the bank's config, its tensors and its record."""

    config: dict
    tensors: dict[str, torch.Tensor]
    record: BankRecord


@dataclass
class LoadedBank:
    """A committed save as the bank holds it: config, rows, removal log, version."""

    config: dict
    store: RowStore
    receipts: list[dict]
    version: str


def save_bank(directory: str, config: dict, store: RowStore, receipts: list[dict], version: str) -> None:
    """Writes the live rows of `store` with the bank's config, removal log and version (see `write_bank`)."""
    tensors = {"images": store.images, "labels": torch.from_numpy(store.labels)}
    if store.embeddings is not None:
        tensors["embeddings"] = store.embeddings
    write_bank(directory, config, tensors, BankRecord(store.ids, store.hashes, receipts, version, store.embedding_info))


def load_bank(directory: str, verify: bool = True) -> LoadedBank:
    """Reads the committed save in `directory` into a `RowStore` (see `read_bank`)."""
    stored = read_bank(directory, verify)
    images, record = stored.tensors["images"], stored.record
    store = RowStore(tuple(images.shape[1:]))
    store.append(images, stored.tensors["labels"].numpy().astype(np.int64), list(record.ids), list(record.hashes))
    if "embeddings" in stored.tensors:
        store.set_embeddings(stored.tensors["embeddings"].float(), record.embedding_info)
    return LoadedBank(stored.config, store, list(record.receipts), record.version)


def write_bank(directory: str, config: dict, tensors: dict[str, torch.Tensor], record: BankRecord) -> None:
    """Writes one save of a bank into `directory` (created if needed), atomically, holding the folder's lock
    (waits up to a minute for another save). See module docstring."""
    os.makedirs(directory, exist_ok=True)
    try:
        with folder_lock(directory, timeout=60.0):
            _write_locked(directory, config, tensors, record)
    except LockBusy:
        raise ValueError(f"'{directory}' is being saved by another process; waited 60 s") from None


def _write_bytes(data: bytes) -> Callable[[str], None]:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return write


def _write_locked(directory: str, config: dict, tensors: dict[str, torch.Tensor], record: BankRecord) -> None:
    token = uuid.uuid4().hex[:12]
    data_file, items_file = f"bank-{token}.safetensors", f"items-{token}.json"
    receipts_file = f"receipts-{token}.jsonl"
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    atomic_write(os.path.join(directory, data_file), _write_bytes(save(tensors)))
    atomic_write_text(os.path.join(directory, items_file), json.dumps({"ids": record.ids, "hashes": record.hashes}))
    atomic_write_text(
        os.path.join(directory, receipts_file), "".join(json.dumps(r, sort_keys=True) + "\n" for r in record.receipts)
    )
    commit = dict(config)
    commit.update(
        _data_file=data_file,
        _items_file=items_file,
        _receipts_file=receipts_file,
        _num_items=len(record.ids),
        _version=record.version,
        _embedding_info=record.embedding_info,
        _items_digest=items_digest(record.ids, tensors["labels"]),
    )
    atomic_write_text(os.path.join(directory, CONFIG_NAME), json.dumps(commit, indent=2, sort_keys=True) + "\n")
    _remove_unreferenced(directory, keep={data_file, items_file, receipts_file})


def items_digest(ids: list[str], labels: torch.Tensor) -> str:
    """sha256 over the ids and labels of the rows, so a flipped label or a renamed id is caught on load."""
    digest = hashlib.sha256(json.dumps(ids).encode("utf-8"))
    digest.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _corrupted(directory: str, problem: str) -> ValueError:
    return ValueError(f"Corrupted memory bank at '{directory}': {problem}")


def _check_commit(directory: str, config: object) -> None:
    """The commit record's fields have the types a save writes; file names stay inside the folder."""
    if not isinstance(config, dict):
        raise _corrupted(directory, f"{CONFIG_NAME} is not an object")
    for key in ("_data_file", "_items_file", "_receipts_file"):
        name = config.get(key)
        if not isinstance(name, str) or not _OWN_DATA.match(name):
            raise _corrupted(directory, f"{CONFIG_NAME} field {key}={name!r} is not a data file of this folder")
    if isinstance(config.get("_num_items"), bool) or not isinstance(config.get("_num_items"), int):
        raise _corrupted(directory, f"{CONFIG_NAME} field _num_items={config.get('_num_items')!r} is not an integer")
    if not isinstance(config.get("_version"), str):
        raise _corrupted(directory, f"{CONFIG_NAME} field _version={config.get('_version')!r} is not a string")


def _check_items(directory: str, ids: object, hashes: object, labels: torch.Tensor, digest: object) -> None:
    """Ids are unique strings, hashes strings, labels a 1-D int64 column of non-negative values, and (for saves
    that record it) the ids and labels match their digest."""
    if not isinstance(ids, list) or any(not isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
        raise _corrupted(directory, "the ids are not unique strings")
    if not isinstance(hashes, list) or any(not isinstance(h, str) for h in hashes):
        raise _corrupted(directory, "the content hashes are not strings")
    if labels.dtype != torch.int64 or labels.ndim != 1 or (labels.numel() and int(labels.min()) < 0):
        found = f"{labels.dtype} {tuple(labels.shape)}"
        raise _corrupted(directory, f"labels must be a 1-D int64 column of non-negative values, got {found}")
    if digest is not None and digest != items_digest(ids, labels):
        raise _corrupted(directory, "the ids or labels do not match the digest of the save (changed after saving)")


def _leftovers(directory: str, keep: set[str]) -> list[str]:
    """The bank's own files in `directory` that the commit does not name: earlier data, temporary files."""
    return [n for n in os.listdir(directory) if (_OWN_DATA.match(n) and n not in keep) or _OWN_TMP.match(n)]


def _remove_unreferenced(directory: str, keep: set[str]) -> None:
    """Deletes data files of earlier or interrupted saves, so no removed item's bytes stay in the folder. Only
    files the bank itself writes (by their exact names) are touched; a user's `bank-statement.csv` is not.
    The caller holds the folder's lock."""
    stale = _leftovers(directory, keep)
    for name in stale:
        os.remove(os.path.join(directory, name))
    if stale:
        fsync_dir(directory)


def _clean_after_load(directory: str, config: dict) -> None:
    """What a killed save left beside the committed files goes, when no save is running (the lock is free)
    and the folder is writable; otherwise the next load or save does it."""
    keep = {config["_data_file"], config["_items_file"], config["_receipts_file"]}
    leftovers = _leftovers(directory, keep)
    if not leftovers:
        return
    try:
        with folder_lock(directory, timeout=0), open(os.path.join(directory, CONFIG_NAME), encoding="utf-8") as f:
            if json.load(f) == config:  # still the commit we read
                _remove_unreferenced(directory, keep)
    except (LockBusy, OSError, ValueError) as e:
        logger.debug("left %s in '%s' for later (%s)", leftovers, directory, e)


def read_bank(directory: str, verify: bool = True) -> StoredBank:
    """Reads the committed save in `directory`; raises `FileNotFoundError` or `ValueError` naming the problem.

    With `verify`, every image's sha256 is recomputed and compared with the stored hash.
    """
    config_path = os.path.join(directory, CONFIG_NAME)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"No memory bank at '{directory}': {CONFIG_NAME} is missing")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _corrupted(directory, f"unreadable {CONFIG_NAME} ({e})") from e
    _check_commit(directory, config)
    data_file, items_file = config["_data_file"], config["_items_file"]
    receipts_file, num_items, version = config["_receipts_file"], config["_num_items"], config["_version"]

    data_path = os.path.join(directory, data_file)
    try:
        tensors = load_file(data_path)
    except (FileNotFoundError, SafetensorError, OSError) as e:
        raise ValueError(f"Corrupted memory bank at '{directory}': cannot read {data_file} ({e})") from e
    try:
        with open(os.path.join(directory, items_file), encoding="utf-8") as f:
            items = json.load(f)
        ids, hashes = items["ids"], items["hashes"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"Corrupted memory bank at '{directory}': cannot read {items_file} ({e!r})") from e

    receipts = _read_receipts(directory, receipts_file)
    for name in ("images", "labels"):
        if name not in tensors:
            raise ValueError(f"Corrupted memory bank at '{directory}': {data_file} has no '{name}' tensor")
    counts = {
        "ids": len(ids),
        "hashes": len(hashes),
        **{name: int(t.shape[0]) for name, t in tensors.items()},
    }
    if any(c != num_items for c in counts.values()):
        raise ValueError(
            f"Corrupted memory bank at '{directory}': the commit records {num_items} items but found {counts}"
        )
    _check_items(directory, ids, hashes, tensors["labels"], config.get("_items_digest"))
    if tensors["images"].dtype != torch.uint8:
        raise ValueError(f"Corrupted memory bank at '{directory}': images are {tensors['images'].dtype}, not uint8")
    if verify:
        bad = [i for i, h, h2 in zip(ids, hashes, content_hashes(tensors["images"])) if h != h2]
        if bad:
            raise ValueError(f"Corrupted memory bank at '{directory}': content hash mismatch for ids {preview(bad)}")
    record = BankRecord(ids, hashes, receipts, version, config.get("_embedding_info"))
    _clean_after_load(directory, config)
    return StoredBank(config, tensors, record)


def _read_receipts(directory: str, receipts_file: str) -> list[dict]:
    try:
        with open(os.path.join(directory, receipts_file), encoding="utf-8") as f:
            receipts = [json.loads(line) for line in f.read().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _corrupted(directory, f"cannot read {receipts_file} ({e!r})") from e
    if any(not isinstance(r, dict) or not isinstance(r.get("removed_ids"), list) for r in receipts):
        raise _corrupted(directory, f"{receipts_file} has a line that is not a removal receipt")
    return receipts
