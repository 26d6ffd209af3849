"""The process state of a run under `accelerate launch`, as the training's `Accelerator` sees it."""

from __future__ import annotations

from accelerate import PartialState
from accelerate.utils import parse_flag_from_env


def process_state() -> PartialState:
    """This process's share of an `accelerate launch` run. `Accelerator` reads ACCELERATE_USE_CPU (set by
    `accelerate launch --cpu` and by users who launch several CPU processes); a bare `PartialState()` does
    not, so on a machine without a GPU every process would see itself alone and do all the work."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
