"""Checks of typed settings: each bad value is named in one `ValueError`."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import numpy as np


class BadValue(ValueError):
    """A settings value that failed its check: `key` names the field (a command line renames it its flag)."""

    def __init__(self, key: str, value: Any, hint: str = "") -> None:
        self.key, self.value, self.hint = key, value, hint
        super().__init__(f"bad config value {key}={value!r}{hint}")


def check_values(config: Any, checks: dict[str, bool], hints: dict[str, str] | None = None) -> None:
    """Raises `BadValue` naming the first key whose check failed (with `hints[key]` appended)."""
    for key, ok in checks.items():
        if not ok:
            raise BadValue(key, getattr(config, key), (hints or {}).get(key, ""))


def is_integer(value: object) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def check_positive_int(name: str, value: object) -> None:
    """Raises ValueError naming `name` unless `value` is an integer >= 1 (2.5, True and "3" are refused)."""
    if not is_integer(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def is_finite_nonnegative(value: object) -> bool:
    """A finite number >= 0, not a bool."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and value >= 0


def is_guidance_scale(value: object) -> bool:
    """A finite number >= 0, not a bool (NaN would switch guidance off)."""
    return is_finite_nonnegative(value)


def check_guidance_scale(name: str, value: object) -> None:
    """Raises ValueError naming `name` unless `value` is a guidance scale (`is_guidance_scale`)."""
    if not is_guidance_scale(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _shown(text: str) -> str:
    """`text` for an error line: its repr, shortened beyond 40 characters (a 5,000-digit number stays one line)."""
    return repr(text) if len(text) <= 40 else f"{text[:37]!r}... ({len(text)} characters)"


def int_option(minimum: int) -> Callable[[str], int]:
    """An argparse `type`: an integer >= `minimum`, else argparse's one line naming the option and the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # also a number beyond Python's digit limit
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {_shown(text)}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse
