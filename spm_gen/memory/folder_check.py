"""`spm-gen check FOLDER`: every problem of a saved pipeline, classifier or memory bank folder, in one pass.

Like `git fsck`, it reads and never changes anything. It lists: files of the wrong kind (a named pipe, a
device, a socket or a directory where a file belongs: never opened) and dangling links; json files that do
not parse; the bank's commit record, shards, digests and content hashes (a verified load); files a killed
save left (stray data or temporary files: they may hold removed bytes until the next save deletes them);
receipts of the bank's log that name an id still present; and receipt files in `receipts/` that are
damaged or that the bank's log does not hold.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from ..utils.file_kinds import special_kind
from .receipts import receipt_problem


@dataclass(frozen=True)
class Problem:
    """One problem: the path it is about and what is wrong."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"

    def to_dict(self) -> dict:
        return asdict(self)


def bank_folder(folder: str) -> str | None:
    """The memory bank folder of `folder` (itself when it is one), or None when it holds none."""
    from ..paths import _is_memory_bank

    if _is_memory_bank(folder):
        return folder
    inner = os.path.join(folder, "memory_bank")
    return inner if os.path.isdir(inner) else None


def check_folder(folder: str) -> list[Problem]:
    """Every problem found in `folder` (empty: none). Raises FileNotFoundError when it is not a folder."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"'{folder}' is not a folder")
    problems = _file_kinds(folder)
    bad = {p.path for p in problems}
    problems += _json_files(folder, bad)
    bank = bank_folder(folder)
    if bank is None and not os.path.isfile(os.path.join(folder, "model_index.json")):
        problems.append(Problem(folder, "neither a saved pipeline (model_index.json) nor a memory bank"))
    if bank is not None:
        problems += _bank(bank, folder)
    return problems


def _file_kinds(folder: str) -> list[Problem]:
    problems = []
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = os.path.join(root, name)
            if os.path.islink(path) and not os.path.exists(path):
                problems.append(Problem(path, f"a link to '{os.readlink(path)}', which does not exist"))
                continue
            kind = special_kind(path)
            if kind and kind != "a directory":
                problems.append(Problem(path, f"{kind}, not a regular file (never opened)"))
    return problems


def _json_files(folder: str, skip: set[str]) -> list[Problem]:
    problems = []
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not name.endswith(".json") or path in skip or special_kind(path):
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    json.load(f)
            except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
                what = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:200]
                problems.append(Problem(path, f"not valid json ({what})"))
    return problems


def _bank(bank_dir: str, folder: str) -> list[Problem]:
    from . import storage
    from .bank import MemoryBank

    try:
        config = storage._read_config(bank_dir)
    except (ValueError, OSError) as e:
        return [Problem(os.path.join(bank_dir, storage.CONFIG_NAME), str(e))]
    problems = []
    referenced = {config["_receipts_file"], *(e["file"] for e in config.get("_shards", []))}
    referenced |= {config[key] for key in storage.V1_FILE_KEYS if isinstance(config.get(key), str)}
    for name in storage._leftovers(bank_dir, referenced):
        what = "a temporary file of a killed save" if name.startswith(".") else "a data file no commit refers to"
        path = os.path.join(bank_dir, name)
        problems.append(Problem(path, f"{what}: may hold removed bytes (the next save deletes it)"))
    try:
        bank = MemoryBank.from_pretrained(bank_dir, verify=True)
    except (ValueError, OSError) as e:
        problems.append(Problem(bank_dir, str(e)))
        return problems + _receipt_files(os.path.join(folder, "receipts"), None)
    present = set(bank.ids)
    log = [r.to_dict() for r in bank.receipts]
    for number, receipt in enumerate(log, 1):
        back = sorted(present & set(receipt["removed_ids"]))
        if back:
            path = os.path.join(bank_dir, config["_receipts_file"])
            what = f"receipt {number} names ids present in the bank as removed (re-added, or the log altered)"
            problems.append(Problem(path, f"{what}: {back[:5]}"))
    return problems + _receipt_files(os.path.join(folder, "receipts"), {r["version_after"] for r in log})


def _receipt_files(directory: str, logged: set[str] | None) -> list[Problem]:
    """The receipt files of `directory`, each checked against the schema and (unless `logged` is None: the log
    could not be read) against the versions the bank's log records."""
    if not os.path.isdir(directory):
        return []
    problems = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not name.endswith(".json") or special_kind(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            continue  # reported by the json pass
        receipt = {k: v for k, v in record.items() if k != "verification"} if isinstance(record, dict) else record
        problem = receipt_problem(receipt)
        if problem:
            problems.append(Problem(path, f"not a removal receipt: {problem}"))
        elif logged is not None and receipt["version_after"] not in logged:
            problems.append(Problem(path, "a receipt the bank's log does not hold (of another bank, or altered)"))
    return problems
