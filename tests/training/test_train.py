import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from spm_gen import SPMDiffusionPipeline
from spm_gen.data import load_digits_dataset
from spm_gen.training import load_config, train
from spm_gen.training.checkpoints import checkpoint_steps
from tests.conftest import launch_two_cpu_processes


def _config(tmp_path, **extra):
    every_step = {"checkpointing_steps": 2, "log_every": 1}  # tiny.yaml's intervals fit 200 steps
    return load_config("configs/tiny.yaml", {"output_dir": str(tmp_path / "run"), **every_step, **extra})


@pytest.mark.slow
def test_tiny_run_ends_with_a_loadable_pipeline(tmp_path):
    run = tmp_path / "run"
    final = train(_config(tmp_path, sample_every=2))
    pipe = SPMDiffusionPipeline.from_pretrained(final)
    train_set = load_digits_dataset(image_size=8, split="train")
    assert sorted(pipe.memory_bank.ids) == sorted(train_set.ids)
    images = pipe(class_labels=[0, 7], num_inference_steps=2, output_type="pt").images
    assert images.shape == (2, 1, 8, 8)
    assert json.load(open(run / "config.json"))["max_train_steps"] == 4
    losses = [json.loads(line) for line in open(run / "loss.jsonl")]
    assert [r["step"] for r in losses] == [1, 2, 3, 4] and all(r["loss"] > 0 for r in losses)
    for picture in ("loss.png", "samples/step-000002.png", "samples/step-000004.png", "samples/final.png"):
        assert (run / picture).stat().st_size > 100
    assert checkpoint_steps(str(run)) == [2, 4]


@pytest.mark.slow
def test_resume_reaches_the_same_state(tmp_path):
    full = train(_config(tmp_path / "a", use_ema=True))
    partial_cfg = _config(tmp_path / "b", use_ema=True, max_train_steps=2)
    train(partial_cfg)
    assert checkpoint_steps(partial_cfg.output_dir) == [2]
    checkpoint = os.listdir(os.path.join(partial_cfg.output_dir, "checkpoints", "checkpoint-2"))
    assert "ema.safetensors" in checkpoint and not any(f.startswith("custom_checkpoint") for f in checkpoint)
    resumed = train(_config(tmp_path / "b", use_ema=True, resume="latest"))
    a = load_file(os.path.join(full, "unet", "diffusion_pytorch_model.safetensors"))
    b = load_file(os.path.join(resumed, "unet", "diffusion_pytorch_model.safetensors"))
    for name in a:  # EMA weights after 4 steps, straight through vs. 2 + resume 2
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)
    steps = [json.loads(line)["step"] for line in open(os.path.join(partial_cfg.output_dir, "loss.jsonl"))]
    assert steps == [1, 2, 3, 4]


@pytest.mark.slow
def test_oracle_excludes_a_class_from_memory_and_training(tmp_path, monkeypatch):
    seen = []
    import spm_gen.training.loop as loop

    real = loop.diffusion_loss

    def spy(model, scheduler, batch, generator, options):
        seen.append((batch.labels.clone(), batch.support_labels.clone()))
        return real(model, scheduler, batch, generator, options)

    monkeypatch.setattr(loop, "diffusion_loss", spy)
    final = train(_config(tmp_path, exclude_classes=[3], permute_labels=False))
    pipe = SPMDiffusionPipeline.from_pretrained(final)
    assert 3 not in pipe.memory_bank.class_counts() and len(pipe.memory_bank.class_counts()) == 9
    assert seen and all(3 not in labels.tolist() and 3 not in support.tolist() for labels, support in seen)


@pytest.mark.slow
def test_images_per_class_trains_on_a_small_set_and_its_memory_is_that_set(tmp_path):
    small = load_digits_dataset(image_size=8, split="train").first_per_class(2)
    final = train(_config(tmp_path, images_per_class=2, exclude_ids=[small.ids[0]]))
    expected = small.exclude(ids=small.ids[:1])
    bank = SPMDiffusionPipeline.from_pretrained(final).memory_bank
    assert sorted(bank.ids) == sorted(expected.ids) and len(bank) == 19


@pytest.mark.slow
def test_twin_trains_without_memory_and_keeps_its_guidance_scale(tmp_path):
    final = train(_config(tmp_path, fusion_type="none", guidance_scale=0.5))
    pipe = SPMDiffusionPipeline.from_pretrained(final)
    assert pipe.memory_bank is None and pipe.config.default_guidance_scale == 0.5


@pytest.mark.slow
def test_two_cpu_processes_train_and_only_rank_0_writes(tmp_path):
    run = tmp_path / "run"
    every_step = ["--checkpointing_steps", "2", "--log_every", "1"]
    launch_two_cpu_processes("scripts/train.py", "--config", "configs/tiny.yaml", "--output_dir", str(run), *every_step)
    assert (run / "pipeline" / "model_index.json").exists()
    assert checkpoint_steps(str(run)) == [2, 4]
    # rank 1 wrote nothing of its own: one loss log line per step, one sample grid, no stray files
    assert len(open(run / "loss.jsonl").read().splitlines()) == 4
    assert sorted(os.listdir(run)) == ["checkpoints", "config.json", "loss.jsonl", "loss.png", "pipeline", "samples"]
    assert "random_states_1.pkl" in os.listdir(run / "checkpoints" / "checkpoint-4")


def test_bad_config_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="learning_rate"):
        _config(tmp_path, learning_rate=-0.1)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_after_the_step_with_a_checkpoint_to_resume_from(tmp_path, signum):
    out = tmp_path / "run"
    settings = ["--output_dir", str(out), "--max_train_steps", "100000", "--log_every", "1", "--sample_every", "100000"]
    command = [sys.executable, "-m", "spm_gen.cli", "train", "--config", "configs/tiny.yaml", *settings]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not ((out / "loss.jsonl").exists() and (out / "loss.jsonl").stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signum)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0 and "Traceback" not in output, output[-2000:]
    (step,) = checkpoint_steps(str(out))
    assert f"stopped after step {step}; the last checkpoint (step {step})" in output
    assert "--resume latest" in output
    config = load_config("configs/tiny.yaml", {"output_dir": str(out), "resume": "latest", "max_train_steps": step + 2})
    assert train(config) is not None and checkpoint_steps(str(out))[-1] == step + 2
