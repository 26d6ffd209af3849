"""Resumable training state in `<run>/checkpoints/checkpoint-<step>`, written so that the run folder always
holds a complete checkpoint: a new one is saved under a temporary name, renamed when complete, and only then
are old ones beyond the limit deleted."""

from __future__ import annotations

import json
import os
import re
import shutil

from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from safetensors import safe_open
from safetensors.torch import save_file

_NAME = re.compile(r"^checkpoint-(\d+)$")
EMA_FILE = "ema.safetensors"


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


def save_ema(ema: EMAModel, folder: str) -> str:
    """The EMA's state as `<folder>/ema.safetensors`: shadow weights as tensors, the scalars as metadata
    (our own state never goes through pickle)."""
    state = ema.state_dict()
    tensors = {f"shadow.{i:05d}": p.detach().cpu().contiguous() for i, p in enumerate(state["shadow_params"])}
    scalars = {k: json.dumps(v) for k, v in state.items() if k not in ("shadow_params", "collected_params")}
    path = os.path.join(folder, EMA_FILE)
    save_file(tensors, path, metadata=scalars)
    return path


def load_ema(ema: EMAModel, folder: str) -> None:
    """Restores what `save_ema` wrote into `ema` (tensors moved to its device)."""
    path = os.path.join(folder, EMA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{folder}' has no {EMA_FILE} (the run uses EMA)")
    with safe_open(path, framework="pt") as f:
        state = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        shadow = [f.get_tensor(name) for name in sorted(f.keys())]
    device = ema.shadow_params[0].device
    ema.load_state_dict({**state, "shadow_params": [t.to(device) for t in shadow]})


def save_checkpoint(
    accelerator: Accelerator, run_dir: str, step: int, total_limit: int, ema: EMAModel | None = None
) -> str:
    """Saves the accelerator's state (model, optimizer, scheduler, RNG) and the EMA (safetensors) for `step`;
    all processes call it."""
    final = checkpoint_path(run_dir, step)
    tmp = final + ".tmp"
    if accelerator.is_main_process and os.path.exists(tmp):
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    if ema is not None and accelerator.is_main_process:
        save_ema(ema, tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_steps(run_dir)[:-total_limit]:
            shutil.rmtree(checkpoint_path(run_dir, old))
    accelerator.wait_for_everyone()
    return final
