"""Where the repository's shipped files are (light: imported by the command line before anything heavy)."""

from __future__ import annotations

import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The shipped models are not package data (they are 33 MB): a clone has them in assets/; an installed package
# finds them where $SPM_GEN_ASSETS points (a folder holding digits/ and memorization/, e.g. a clone's assets/)
ASSETS_ENV = "SPM_GEN_ASSETS"
ASSETS = os.environ.get(ASSETS_ENV) or os.path.join(REPO, "assets")
DIGITS_MODELS = os.path.join(ASSETS, "digits")  # shipped: see assets/digits/README.md
MEMORIZATION_MODELS = os.path.join(ASSETS, "memorization")  # shipped: see assets/memorization/README.md
WHERE_MODELS_ARE = (
    f"the shipped models are in the assets/ folder of a clone of the spm-gen repository: set {ASSETS_ENV} to "
    "that folder, or pass --models / --memorization-models"
)


# the folders a finished training run leaves (`<output_dir>/pipeline`, `<output_dir>/classifier`): what writes
# them, and a shipped model that works in their place now
RUN_OUTPUTS = {
    "pipeline": ("scripts/train.py", os.path.join("assets", "digits", "spm")),
    "classifier": ("scripts/train_classifier.py", os.path.join("assets", "digits", "judge")),
}


def require_entries(folder: str, entries: dict[str, str], how: str) -> None:
    """Raises FileNotFoundError naming each of `entries` (name -> what it is) that `folder` lacks, and `how`
    to make them."""
    missing = [f"{name} ({what})" for name, what in entries.items() if not os.path.exists(os.path.join(folder, name))]
    if missing:
        raise FileNotFoundError(f"'{folder}' lacks {', '.join(missing)}: {how}")


def check_model_folder(folder: str, flag: str = "FOLDER", require_bank: bool = True) -> None:
    """Raises FileNotFoundError or ValueError (before any heavy import) unless `folder` is a saved model folder
    (with a memory bank, when `require_bank`): one that does not exist, a file, or a memory bank folder itself
    each get their own message."""
    if not os.path.exists(folder):
        written_by = RUN_OUTPUTS.get(os.path.basename(os.path.normpath(folder)))
        hint = f" ({written_by[0]} writes it when its run finishes; {written_by[1]} works now)" if written_by else ""
        raise FileNotFoundError(f"{flag} '{folder}' does not exist{hint}")
    if not os.path.isdir(folder):
        raise ValueError(f"{flag} '{folder}' is a file, not a saved model folder")
    if _is_memory_bank(folder):
        parent = os.path.dirname(os.path.abspath(folder))
        raise ValueError(f"{flag} '{folder}' is a memory bank itself; pass the model folder holding it: '{parent}'")
    if require_bank and not os.path.isdir(os.path.join(folder, "memory_bank")):
        raise FileNotFoundError(f"'{folder}' has no memory_bank/ (expected a saved pipeline or classifier folder)")


def check_pipeline_folder(folder: str, flag: str) -> None:
    """Raises (before any heavy import) unless `folder` is a saved pipeline folder: `check_model_folder`'s
    messages, and one for a classifier folder."""
    check_model_folder(folder, flag, require_bank=False)  # exists, is a folder, is not a memory bank itself
    if os.path.isfile(os.path.join(folder, "model_index.json")):
        return
    kind = "a classifier folder" if os.path.isfile(os.path.join(folder, "config.json")) else "not a saved pipeline"
    example = os.path.join("assets", "digits", "spm")
    raise ValueError(f"{flag} '{folder}' is {kind} (no model_index.json); pass an SPM pipeline folder, e.g. {example}")


def _is_memory_bank(folder: str) -> bool:
    """A folder written by `MemoryBank.save_pretrained` (its config.json is a commit record)."""
    from .utils.file_kinds import special_kind

    if special_kind(os.path.join(folder, "config.json")):
        return False  # not read here (it could block): the load that follows names it
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            return "_num_items" in json.load(f)
    except (OSError, ValueError):
        return False


def check_labels_in_folder(folder: str, labels: list[int]) -> None:
    """Raises ValueError (as the bank does, listing the labels present) when a saved model folder's memory has
    no item of one of `labels`: read from the shards' label columns with numpy, before torch loads. A bank in
    the first format, or one this cannot read, is left to the bank's own check."""
    from safetensors import safe_open

    from .utils.file_kinds import special_kind
    from .utils.messages import check_labels_known

    bank_dir = os.path.join(folder, "memory_bank")
    try:
        if special_kind(os.path.join(bank_dir, "config.json")):
            return
        with open(os.path.join(bank_dir, "config.json"), encoding="utf-8") as f:
            shards = json.load(f)["_shards"]
        present: set[int] = set()
        for entry in shards:
            if special_kind(os.path.join(bank_dir, entry["file"])):
                return  # not read here (it could block): the bank's load names it
            with safe_open(os.path.join(bank_dir, entry["file"]), framework="numpy") as f:
                present.update(f.get_tensor("labels").tolist())
    except Exception:  # unreadable here (safetensors has its own error types): the bank's own check decides
        return
    check_labels_known(labels, sorted(present))


def suggestion(word: str, choices: list[str]) -> str:
    """' (did you mean X?)' for the closest of `choices` to `word`, or ''."""
    import difflib

    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
