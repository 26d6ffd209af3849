"""Resumable training state in `<run>/checkpoints/checkpoint-<step>`, written so that the run folder always
holds a complete checkpoint: a new one is saved under a temporary name, renamed when complete, and only then
are old ones beyond the limit deleted."""

from __future__ import annotations

import os
import re
import shutil

from accelerate import Accelerator

_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_steps(run_dir: str) -> list[int]:
    """Steps of the complete checkpoints of a run, ascending."""
    folder = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(folder):
        return []
    return sorted(int(m.group(1)) for name in os.listdir(folder) if (m := _NAME.match(name)))


def checkpoint_path(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, "checkpoints", f"checkpoint-{step}")


def resolve_resume(run_dir: str, resume: str | None) -> tuple[str, int] | None:
    """`"latest"` -> the newest complete checkpoint of the run (None when there is none); a path -> that path."""
    if resume is None:
        return None
    if resume == "latest":
        steps = checkpoint_steps(run_dir)
        return (checkpoint_path(run_dir, steps[-1]), steps[-1]) if steps else None
    match = _NAME.match(os.path.basename(os.path.normpath(resume)))
    if not os.path.isdir(resume) or not match:
        raise ValueError(f"resume={resume!r} is neither 'latest' nor a checkpoint-<step> folder")
    return resume, int(match.group(1))


def save_checkpoint(accelerator: Accelerator, run_dir: str, step: int, total_limit: int) -> str:
    """Saves the accelerator's state (model, optimizer, scheduler, EMA, RNG) for `step`; all processes call it."""
    final = checkpoint_path(run_dir, step)
    tmp = final + ".tmp"
    if accelerator.is_main_process and os.path.exists(tmp):
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_steps(run_dir)[:-total_limit]:
            shutil.rmtree(checkpoint_path(run_dir, old))
    accelerator.wait_for_everyone()
    return final
