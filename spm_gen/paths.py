"""Where the repository's shipped files are (light: imported by the command line before anything heavy)."""

from __future__ import annotations

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS_MODELS = os.path.join(REPO, "assets", "digits")  # shipped: see assets/digits/README.md
MEMORIZATION_MODELS = os.path.join(REPO, "assets", "memorization")  # shipped: see assets/memorization/README.md
