"""Checks of typed settings: each bad value is named in one `ValueError`."""

from __future__ import annotations

from typing import Any


def check_values(config: Any, checks: dict[str, bool], hints: dict[str, str] | None = None) -> None:
    """Raises ValueError naming the first key whose check failed (with `hints[key]` appended)."""
    for key, ok in checks.items():
        if not ok:
            hint = (hints or {}).get(key, "")
            raise ValueError(f"bad config value {key}={getattr(config, key)!r}{hint}")
