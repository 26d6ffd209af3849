"""Shared fixtures: tiny images made on the fly, never downloaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from spm_gen import MemoryBank


def make_images(count: int, channels: int = 1, size: int = 8, seed: int = 0) -> torch.Tensor:
    """Distinct random images `(count, channels, size, size)`, float in [0, 1], exactly representable as uint8."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, channels, size, size), generator=g, dtype=torch.uint8).float() / 255.0


def make_labels(count: int, num_classes: int = 4) -> torch.Tensor:
    return torch.arange(count) % num_classes


@pytest.fixture
def tiny_images() -> torch.Tensor:
    return make_images(12)


@pytest.fixture
def tiny_bank() -> MemoryBank:
    """12 items, 1x8x8, labels 0..3 (three items each), ids "0".."11"."""
    return MemoryBank.from_images(make_images(12), make_labels(12))


@pytest.fixture
def rgb_images() -> torch.Tensor:
    return make_images(6, channels=3, size=16, seed=1)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """The demo's four models at test size, laid out as the demo expects (`root/spm`, `twin`, `oracle`, `judge`):
    the tiny SPM (saved with guidance 0.3 as its default), its twin and the twin retrained without class 3 (a few
    steps each; guidance 0), and an untrained judge."""
    import shutil

    from spm_gen import SPMClassifier, SPMDiffusionPipeline
    from spm_gen.models.classifier_spm import save_classifier
    from spm_gen.training import load_config, train

    root = tmp_path_factory.mktemp("models")
    runs = {
        "spm": {"guidance_scale": 0.3},
        "twin": {"fusion_type": "none"},
        "oracle": {"fusion_type": "none", "exclude_classes": [3]},
    }
    for name, extra in runs.items():
        overrides = {"output_dir": str(root / f"{name}_run"), **extra}
        shutil.copytree(train(load_config("configs/tiny.yaml", overrides)), root / name)
    judge = SPMClassifier(image_size=8, stage_channels=(8,), blocks_per_stage=(1,), embed_dim=6, head="linear")
    save_classifier(judge, None, str(root / "judge"))
    # the memorization regime's layout (stand-ins: the oracles here are not retrained without the removed ids)
    regime = root / "memorization"
    for name, source in {"twin": "twin", "spm": "spm", "oracle_twin": "oracle", "oracle_spm": "spm"}.items():
        shutil.copytree(root / source, regime / name)
    ids = SPMDiffusionPipeline.from_pretrained(root / "spm").memory_bank.ids
    (regime / "removed.json").write_text(json.dumps({ids[0]: 3, ids[-1]: 1}))
    for name in ("spm", "oracle_spm"):  # stand-ins for the memory-only SPM and its oracle
        shutil.copytree(root / "spm", regime / "complete_forgetting" / name)
    (regime / "complete_forgetting" / "removed.json").write_text(json.dumps({ids[1]: 2}))
    models = {name: str(root / name) for name in ("spm", "twin", "oracle", "judge")}
    return models | {"root": str(root), "memorization": str(regime)}


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> str:
    """A tiny SPM trained for a few steps on the digits (configs/tiny.yaml): its saved pipeline folder."""
    from spm_gen.training import load_config, train

    run = tmp_path_factory.mktemp("run")
    return train(load_config("configs/tiny.yaml", {"output_dir": str(run)}))


@pytest.fixture
def pipe():
    """A tiny untrained SPM pipeline over 24 random 1x8x8 memory images of 4 classes."""
    from tests.tiny import tiny_pipeline

    return tiny_pipeline()


def launch_two_cpu_processes(script: str, *args: str) -> subprocess.CompletedProcess:
    """Runs `script` under `accelerate launch` with two CPU processes; fails the test with its output (the
    scripts' error lines go to stdout, tracebacks and progress to stderr)."""
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    result = subprocess.run([*launch, script, *args], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result
