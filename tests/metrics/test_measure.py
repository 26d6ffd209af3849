import json
import os
import subprocess
import sys

import pytest
import torch

from spm_gen import SPMClassifier
from spm_gen.measure import measure_fid, measure_memorization
from spm_gen.metrics.unlearning import generation_unlearning_accuracy
from spm_gen.models.classifier_spm import save_classifier
from spm_gen.sampling import read_sample_folder
from spm_gen.training import load_config, parse_overrides, train


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    return train(load_config("configs/tiny.yaml", parse_overrides(["--output_dir", str(run)])))


def test_memorization_run(tiny_pipeline, tmp_path):
    result = measure_memorization(tiny_pipeline, str(tmp_path), num_images=6, steps=2, batch_size=4)
    assert result["settings"]["num_images"] == 6 and 0 <= result["memorization_rate"] <= 1
    images, labels = read_sample_folder(str(tmp_path / "samples"), channels=1)
    assert images.shape == (6, 1, 8, 8) and labels == [0, 1, 2, 3, 4, 5]
    assert json.load(open(tmp_path / "memorization.json")) == result
    assert (tmp_path / "nn_distances.png").stat().st_size > 1000


def test_fid_run_with_oracle(tiny_pipeline, tmp_path):
    classifier = SPMClassifier(image_size=8, stage_channels=(8,), blocks_per_stage=(1,), embed_dim=6, head="linear")
    save_classifier(classifier, None, str(tmp_path / "clf"))
    result = measure_fid(tiny_pipeline, str(tmp_path / "clf"), str(tmp_path / "out"), num_images=9,
                         exclude_classes=[3], oracle_dir=tiny_pipeline, steps=2)  # fmt: skip
    assert result["fid_remaining_classes"]["num_images"][0] == 9
    assert result["fid_oracle"]["fid"] == pytest.approx(0.0, abs=1e-4)  # same pipeline, same seeds
    _, labels = read_sample_folder(str(tmp_path / "out" / "samples"), channels=1)
    assert 3 not in labels


def test_generation_ua():
    judge = SPMClassifier(image_size=8, stage_channels=(8,), blocks_per_stage=(1,), embed_dim=6, num_classes=3,
                          head="linear")  # fmt: skip
    with torch.no_grad():
        judge.linear.weight.zero_()
        judge.linear.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))  # always predicts class 1
    images = torch.rand(4, 1, 8, 8)
    assert generation_unlearning_accuracy(judge, None, images, forgotten_class=1) == 0.0
    assert generation_unlearning_accuracy(judge, None, images, forgotten_class=2) == 100.0


def test_sampling_splits_across_two_cpu_processes(tiny_pipeline, tmp_path):
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "scripts/measure_memorization.py", "--pipeline", tiny_pipeline, "--out", str(tmp_path),
        "--num-images", "10", "--steps", "2", "--batch-size", "3",
    ]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    images, labels = read_sample_folder(str(tmp_path / "samples"), channels=1)
    assert len(images) == 10 and labels == [i % 10 for i in range(10)]
    assert json.load(open(tmp_path / "memorization.json"))["settings"]["num_images"] == 10
