"""Progress bars that stay readable in logs: in a terminal they refresh as usual; when stderr is not a
terminal (CI, `> log`), each bar prints at most one line every `LOG_INTERVAL_S` seconds."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0


def bar_settings() -> dict:
    """tqdm keyword arguments for this process's stderr (also for `DiffusionPipeline.set_progress_bar_config`)."""
    return {} if sys.stderr.isatty() else {"mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S}


def progress(iterable: Iterable, desc: str, disable: bool = False, **kwargs) -> tqdm:
    """`tqdm(iterable, desc=...)` with `bar_settings()`."""
    return tqdm(iterable, desc=desc, disable=disable, **{**bar_settings(), **kwargs})
