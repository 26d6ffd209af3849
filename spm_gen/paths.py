"""Where the repository's shipped files are (light: imported by the command line before anything heavy)."""

from __future__ import annotations

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS_MODELS = os.path.join(REPO, "assets", "digits")  # shipped: see assets/digits/README.md
MEMORIZATION_MODELS = os.path.join(REPO, "assets", "memorization")  # shipped: see assets/memorization/README.md


def require_entries(folder: str, entries: dict[str, str], how: str) -> None:
    """Raises FileNotFoundError naming each of `entries` (name -> what it is) that `folder` lacks, and `how`
    to make them."""
    missing = [f"{name} ({what})" for name, what in entries.items() if not os.path.exists(os.path.join(folder, name))]
    if missing:
        raise FileNotFoundError(f"'{folder}' lacks {', '.join(missing)}: {how}")
