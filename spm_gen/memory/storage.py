"""On-disk format of a memory bank: safetensors shards + json, committed atomically.

A save folder holds:

- `shard-<token>.safetensors` (one or more): the columns of a group of at most `rows.shard_capacity` items:
  `images` (uint8, n x C x H x W), `labels` (int64, n), `keys` (the ids' selection keys, `id_keys`, as
  int64), optional `embeddings`; its header metadata holds the rows' `ids` and `hashes` (sha256 of each
  image's uint8 CHW bytes) as json lists.
- `receipts-<token>.jsonl`: the bank's whole removal log, one receipt per line (ids and hashes, never
  pixels); each save appends the receipts of its removals to the log it was loaded with.
- `config.json`: the bank's config plus the commit record (`_shards`: file, count and digest of ids and
  labels of each shard, and of its embeddings when it has them, in row order; `_receipts_file`, `_num_items`,
  `_version`, `_embedding_info`).
  Replacing it with `os.replace` is the commit point.

A save rewrites only the shards whose rows changed since the bank was loaded from (or last saved to) the
same folder, writes them under new names, commits `config.json`, and only then deletes the files the new
commit does not name. A crash at any point leaves a folder whose `config.json` names complete files: the
previous save or the new one. Every file is written under a name the bank chose (the safetensors bytes
too: safetensors' own writer would leave `.tmpXXXXXX` files nobody could recognise), and a save holds the
folder's lock (`.spm-gen.lock`) throughout, so the next load or save that finds the lock free deletes what
a killed save left: its temporary files and the previous commit's data files.

Loading reads one shard at a time into columns sized for the whole bank, so the peak memory is the bank
plus one shard. Folders in the first format (one `bank-*.safetensors` + `items-*.json`) still load
(`storage_v1`); their next save converts them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from ..utils.atomic import atomic_write, atomic_write_text, fsync_dir
from ..utils.file_kinds import special_kind
from ..utils.locks import LockBusy, folder_lock
from ..utils.messages import check_labels_known
from .ranking import id_keys
from .rows import RowStore
from .storage_checks import (
    ShardData,
    check_embeddings,
    check_ids,
    check_labels,
    check_regular_file,
    check_tensors,
    corrupted,
    embeddings_digest,
    items_digest,
    parse_json,
    read_receipts,
    verify_hashes,
)
from .storage_v1 import FILE_KEYS as V1_FILE_KEYS
from .storage_v1 import read_v1, warn_first_format

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
_TOKEN = "[0-9a-f]{12}"
_SHARD = re.compile(rf"^shard-{_TOKEN}\.safetensors$")
_RECEIPTS = re.compile(rf"^receipts-{_TOKEN}\.jsonl$")
_OWN_FILE = rf"(shard-{_TOKEN}\.safetensors|receipts-{_TOKEN}\.jsonl|bank-{_TOKEN}\.safetensors|items-{_TOKEN}\.json)"
_OWN_DATA = re.compile(rf"^{_OWN_FILE}$")  # the data files a save writes (and the first format's)
_OWN_TMP = re.compile(rf"^\.({_OWN_FILE}|config\.json)\.[0-9a-f]{{8}}\.tmp$")  # their temporary files (atomic_write)


@dataclass
class SavedShards:
    """Where each shard of a bank's rows lies in the folder it was last loaded from or saved to: shard ->
    its commit entry (`file`, `count`, `digest`). A save into that folder reuses the unchanged ones."""

    directory: str | None = None  # real path
    entries: dict[int, dict] = field(default_factory=dict)
    unloaded: dict[int, dict] = field(default_factory=dict)  # shards a partial load left on disk (kept as they are)
    version: str | None = None  # the commit the bank last read from or wrote to `directory`


@dataclass
class LoadedBank:
    """A committed save as the bank holds it: config, rows, removal log, version, shard files."""

    config: dict
    store: RowStore
    receipts: list[dict]
    version: str
    saved: SavedShards


SAVE_WAIT_S = 60.0


@contextmanager
def bank_lock(directory: str, timeout: float = SAVE_WAIT_S) -> Iterator[None]:
    """The bank folder's lock, the one every writer takes (created with the folder if needed); raises
    ValueError when another writer holds it for longer than `timeout` seconds."""
    os.makedirs(directory, exist_ok=True)
    try:
        with folder_lock(directory, timeout=timeout):
            yield
    except LockBusy:
        raise ValueError(f"'{directory}' is being changed by another process; waited {timeout:g} s") from None


def removals_since(directory: str, saved: SavedShards | None, known: list[dict]) -> list[dict] | None:
    """The removals committed in `directory` by another writer since this bank last read or wrote it: the
    receipts of its log that `known` lacks; None when the folder's commit is still the one the bank knows (or
    the bank never read or wrote this folder: saving there replaces it). The caller holds the lock."""
    if saved is None or saved.directory != os.path.realpath(directory):
        return None
    if not os.path.isfile(os.path.join(directory, CONFIG_NAME)):
        return None
    config = _read_config(directory)
    if config["_version"] == saved.version:
        return None
    seen = {r.get("version_after") for r in known}
    return [r for r in read_receipts(directory, config["_receipts_file"]) if r.get("version_after") not in seen]


def check_no_links(directory: str) -> None:
    """Raises ValueError when a file the save would replace or delete is a symbolic link (a Hugging Face cache
    snapshot links every file into `blobs/`): replacing the link would leave the removed items' bytes in its
    target. Saving into a new folder copies the content instead."""
    if not os.path.isdir(directory):
        return
    linked = sorted(
        name
        for name in os.listdir(directory)
        if os.path.islink(os.path.join(directory, name)) and (name == CONFIG_NAME or _OWN_DATA.match(name))
    )
    if linked:
        target = os.path.realpath(os.path.join(directory, linked[0]))
        raise ValueError(
            f"'{directory}' holds symbolic links ({', '.join(linked[:3])} -> '{target}'): editing it in place would "
            "leave removed items' bytes in what they point to; write the edited model to a new folder instead "
            "(spm-gen remove --output NEW, or save_pretrained(NEW))"
        )


def save_bank(
    directory: str, config: dict, store: RowStore, receipts: list[dict], version: str, saved: SavedShards | None
) -> SavedShards:
    """Writes the live rows of `store` with the bank's config, removal log and version into `directory`
    (created if needed), atomically, holding the folder's lock (waits up to a minute for another writer).
    Returns where the shards now lie. See module docstring."""
    with bank_lock(directory):
        check_no_links(directory)
        return _write_locked(directory, config, store, receipts, version, saved)


def _write_bytes(data: bytes) -> Callable[[str], None]:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return write


def _token() -> str:
    return uuid.uuid4().hex[:12]


def _write_shard(directory: str, store: RowStore, rows: np.ndarray) -> dict:
    index = torch.from_numpy(rows).to(store.device)
    ids, hashes = [store.ids[r] for r in rows.tolist()], [store.hashes[r] for r in rows.tolist()]
    tensors = {"images": store.images[index].cpu().contiguous(), "labels": torch.from_numpy(store.labels[rows])}
    verify_hashes(directory, ids, hashes, tensors["images"])  # never write rows whose pixels lost their hash
    tensors["keys"] = torch.from_numpy(store.keys[rows].view(np.int64))  # id_keys(ids), not recomputed on load
    entry = {"count": len(ids), "digest": items_digest(ids, tensors["labels"])}
    if store.embeddings is not None:
        tensors["embeddings"] = store.embeddings[index].cpu().contiguous()
        entry["embeddings_digest"] = embeddings_digest(tensors["embeddings"])
    name = f"shard-{_token()}.safetensors"
    data = save(tensors, metadata={"ids": json.dumps(ids), "hashes": json.dumps(hashes)})
    atomic_write(os.path.join(directory, name), _write_bytes(data))
    return {"file": name, **entry}


def _write_locked(
    directory: str, config: dict, store: RowStore, receipts: list[dict], version: str, saved: SavedShards | None
) -> SavedShards:
    real = os.path.realpath(directory)
    same_folder = saved is not None and saved.directory == real
    reusable = saved.entries if same_folder else {}
    unloaded = saved.unloaded if saved is not None else {}
    if unloaded and not same_folder:
        raise ValueError("a bank loaded for a removal (only the shards it touches) saves back into its own folder only")
    entries = dict(unloaded)
    for shard, rows in store.shard_groups():
        if shard in unloaded:
            raise ValueError(f"shard {shard} is both in memory and left on disk")
        entry = reusable.get(shard)
        unchanged = entry is not None and shard not in store.changed_shards
        if not (unchanged and os.path.isfile(os.path.join(directory, entry["file"]))):
            entry = _write_shard(directory, store, rows)
        entries[shard] = entry
    receipts_file = f"receipts-{_token()}.jsonl"
    atomic_write_text(
        os.path.join(directory, receipts_file), "".join(json.dumps(r, sort_keys=True) + "\n" for r in receipts)
    )
    commit = dict(config)
    commit.update(
        _shards=[entries[shard] for shard in sorted(entries)],
        _receipts_file=receipts_file,
        _num_items=store.n + sum(entry["count"] for entry in unloaded.values()),
        _version=version,
        _embedding_info=store.embedding_info,
    )
    atomic_write_text(os.path.join(directory, CONFIG_NAME), json.dumps(commit, indent=2, sort_keys=True) + "\n")
    _remove_unreferenced(directory, _referenced(commit))
    store.mark_saved()
    return SavedShards(real, {k: v for k, v in entries.items() if k not in unloaded}, unloaded, version)


def _referenced(config: dict) -> set[str]:
    """The data files a commit names."""
    if "_shards" in config:
        return {entry["file"] for entry in config["_shards"]} | {config["_receipts_file"]}
    return {config[key] for key in V1_FILE_KEYS} | {config["_receipts_file"]}


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
    keep = _referenced(config)
    leftovers = _leftovers(directory, keep)
    if not leftovers:
        return
    try:
        with folder_lock(directory, timeout=0), open(os.path.join(directory, CONFIG_NAME), encoding="utf-8") as f:
            if json.load(f) == config:  # still the commit we read
                _remove_unreferenced(directory, keep)
    except (LockBusy, OSError, ValueError) as e:
        logger.debug("left %s in '%s' for later (%s)", leftovers, directory, e)


# ---------------------------------------------------------------------- loading


def _read_config(directory: str) -> dict:
    config_path = os.path.join(directory, CONFIG_NAME)
    check_regular_file(directory, CONFIG_NAME)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"No memory bank at '{directory}': {CONFIG_NAME} is missing")
    try:
        with open(config_path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise corrupted(directory, f"unreadable {CONFIG_NAME} ({e})") from e
    config = parse_json(directory, CONFIG_NAME, text)
    if not isinstance(config, dict):
        raise corrupted(directory, f"{CONFIG_NAME} is not an object")
    _check_commit(directory, config)
    return config


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_commit(directory: str, config: dict) -> None:
    """The commit record's fields have the types a save writes; file names stay inside the folder."""
    receipts = config.get("_receipts_file")
    if not isinstance(receipts, str) or not _RECEIPTS.match(receipts):
        raise corrupted(directory, f"{CONFIG_NAME} field _receipts_file={receipts!r} is not a data file of this folder")
    if not _is_count(config.get("_num_items")):
        raise corrupted(directory, f"{CONFIG_NAME} field _num_items={config.get('_num_items')!r} is not an integer")
    if not isinstance(config.get("_version"), str):
        raise corrupted(directory, f"{CONFIG_NAME} field _version={config.get('_version')!r} is not a string")
    shape = config.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_count(s) and s > 0 for s in shape)):
        raise corrupted(directory, f"{CONFIG_NAME} field image_shape={shape!r} is not [C, H, W] with positive sizes")
    if "_shards" not in config:
        return  # the first format; storage_v1 checks its fields
    shards = config["_shards"]
    good = isinstance(shards, list) and all(
        isinstance(e, dict)
        and isinstance(e.get("file"), str)
        and _SHARD.match(e["file"])
        and _is_count(e.get("count"))
        and isinstance(e.get("digest"), str)
        for e in shards
    )
    if not good:
        raise corrupted(directory, f"{CONFIG_NAME} field _shards is not a list of shard files of this folder")
    if sum(e["count"] for e in shards) != config["_num_items"]:
        raise corrupted(
            directory, f"the shards hold {sum(e['count'] for e in shards)} items, not {config['_num_items']}"
        )


def _read_shard(directory: str, entry: dict, image_shape: tuple) -> ShardData:
    """One shard's columns, ids and hashes, checked against its commit entry."""
    name = entry["file"]
    check_regular_file(directory, name)
    try:
        with safe_open(os.path.join(directory, name), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        ids, hashes = json.loads(metadata["ids"]), json.loads(metadata["hashes"])
    except (FileNotFoundError, SafetensorError, OSError, RuntimeError, KeyError, ValueError, RecursionError) as e:
        raise corrupted(directory, f"cannot read {name} ({e!r})") from e
    check_ids(directory, ids, hashes)
    check_tensors(directory, name, tensors, {"commit": entry["count"], "ids": len(ids), "hashes": len(hashes)})
    check_labels(directory, ids, tensors["labels"], entry["digest"])
    if tuple(tensors["images"].shape[1:]) != image_shape:
        raise corrupted(
            directory, f"{name} holds images of shape {tuple(tensors['images'].shape[1:])}, not {image_shape}"
        )
    return ShardData(tensors, ids, hashes)


def shards_holding(directory: str, ids: set[str], labels: set[int]) -> set[int] | None:
    """The shards of the committed save that hold one of `ids` or an item of `labels`, read from their headers
    and label columns only (None for a first-format folder: one file holds everything). Raises ValueError
    naming the labels no item has (and those items have)."""
    config = _read_config(directory)
    if "_shards" not in config:
        return None
    wanted = torch.tensor(sorted(labels), dtype=torch.int64)
    found, present = set(), set()
    for index, entry in enumerate(config["_shards"]):
        check_regular_file(directory, entry["file"])
        try:
            with safe_open(os.path.join(directory, entry["file"]), framework="pt") as f:
                shard_ids = json.loads((f.metadata() or {})["ids"]) if ids else []
                shard_labels = f.get_tensor("labels") if labels else wanted[:0]
        except (FileNotFoundError, SafetensorError, OSError, RuntimeError, KeyError, json.JSONDecodeError) as e:
            raise corrupted(directory, f"cannot read {entry['file']} ({e!r})") from e
        present.update(torch.unique(shard_labels).tolist())
        if not ids.isdisjoint(shard_ids) or bool(torch.isin(shard_labels, wanted).any()):
            found.add(index)
    check_labels_known(sorted(labels), sorted(present))
    return found


LOAD_ATTEMPTS = 20


def load_bank(directory: str, verify: bool = True, shards: set[int] | None = None) -> LoadedBank:
    """Reads the committed save in `directory` shard by shard into a `RowStore`; raises `FileNotFoundError`
    or `ValueError` naming the problem. With `verify`, every image's sha256 is recomputed and compared.
    `shards`: read only these (a partial load for a removal; the others are kept as they are on saving).

    Readers take no lock. A writer that commits while a reader reads deletes the files of the commit the
    reader started on; the reader then finds `config.json` changed and reads the new commit, so it sees
    the old commit or the new one, never an error (a failure on an unchanged commit is a real one)."""
    for attempt in range(LOAD_ATTEMPTS):
        before = _commit_text(directory)
        try:
            return _load_once(directory, verify, shards)
        except (ValueError, FileNotFoundError):
            if attempt + 1 == LOAD_ATTEMPTS or before is None or _commit_text(directory) == before:
                raise
            logger.debug("'%s' was committed while it was read; reading the new commit", directory)
    raise AssertionError("unreachable")


def _commit_text(directory: str) -> str | None:
    """The commit record's text, or None when there is none to read (missing, or not a regular file: the load
    names it)."""
    if special_kind(os.path.join(directory, CONFIG_NAME)):
        return None
    try:
        with open(os.path.join(directory, CONFIG_NAME), encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _load_once(directory: str, verify: bool, shards: set[int] | None) -> LoadedBank:
    config = _read_config(directory)
    image_shape = tuple(config["image_shape"])
    if "_shards" in config:
        wanted = range(len(config["_shards"])) if shards is None else sorted(shards)
        entries = {i: config["_shards"][i] for i in wanted}
        loaded = (_read_shard(directory, entry, image_shape) for entry in entries.values())
    else:
        first = read_v1(directory, config)
        warn_first_format(directory, config, verify)
        entries, loaded = {0: None}, iter([first])
        image_shape = tuple(first.tensors["images"].shape[1:])
    receipts = read_receipts(directory, config["_receipts_file"])
    unloaded = {i: e for i, e in enumerate(config.get("_shards", [])) if i not in entries}
    store = RowStore(image_shape)
    store.reserve(config["_num_items"] - sum(e["count"] for e in unloaded.values()))
    for index, shard in zip(entries, loaded):
        keys = shard.tensors["keys"].numpy().view(np.uint64) if "keys" in shard.tensors else None
        if verify:
            verify_hashes(directory, shard.ids, shard.hashes, shard.tensors["images"])
            if keys is not None and not np.array_equal(keys, id_keys(shard.ids)):
                raise corrupted(directory, f"the selection keys of shard {index} do not match its ids")
        embeddings = shard.tensors.get("embeddings")
        if embeddings is not None:
            entry = entries[index] or {}  # the first format's one file has no commit entry (no digest)
            check_embeddings(
                directory, entry.get("file", "the data file"), embeddings, entry.get("embeddings_digest"), verify
            )
        try:
            store.append(
                shard.tensors["images"],
                shard.tensors["labels"].numpy(),
                shard.ids,
                shard.hashes,
                None if embeddings is None else embeddings.float(),
                shard=index,
                keys=keys,
            )
        except ValueError as e:
            raise corrupted(directory, f"shard {index} does not fit the ones before it ({e})") from e
    if store.embeddings is not None:
        store.embedding_info = config.get("_embedding_info")
    kept = {i: e for i, e in entries.items() if e is not None}
    saved = SavedShards(os.path.realpath(directory), kept, unloaded, config["_version"])
    _clean_after_load(directory, config)
    return LoadedBank(config, store, receipts, config["_version"], saved)
