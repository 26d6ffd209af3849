"""Why the checkpoint rotation is ours, not accelerate's `ProjectConfiguration(total_limit=...)`: accelerate
deletes the oldest checkpoints *before* it saves the new one (accelerator.save_state), so a save that fails or
is killed with `total_limit=1` leaves no complete checkpoint. Ours saves under a temporary name, renames, and
only then deletes."""

import os

import pytest
import torch
from accelerate import Accelerator

from spm_gen.training.checkpoints import checkpoint_steps, resolve_resume, save_checkpoint


def test_a_save_that_fails_midway_leaves_the_last_complete_checkpoint(tmp_path, monkeypatch):
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(2, 2))
    run = str(tmp_path)
    save_checkpoint(accelerator, run, 10, total_limit=1)
    real = accelerator.save_state

    def failing(folder, **kwargs):
        real(folder, **kwargs)
        raise OSError(28, "No space left on device")  # written, then the disk filled

    monkeypatch.setattr(accelerator, "save_state", failing)
    with pytest.raises(OSError):
        save_checkpoint(accelerator, run, 20, total_limit=1)
    assert checkpoint_steps(run) == [10]
    path, step = resolve_resume(run, "latest")
    assert step == 10 and os.path.isfile(os.path.join(path, "model.safetensors"))
    monkeypatch.setattr(accelerator, "save_state", real)
    save_checkpoint(accelerator, run, 30, total_limit=1)  # the next save rotates as usual
    assert checkpoint_steps(run) == [30] and model is not None
