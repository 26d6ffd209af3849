import json

import pytest

from spm_gen.sampling import read_sample_folder
from tests.conftest import launch_two_cpu_processes


@pytest.mark.slow  # two processes under accelerate launch
def test_sampling_splits_across_two_cpu_processes(tiny_pipeline_dir, tmp_path):
    launch_two_cpu_processes(
        "scripts/measure_memorization.py",
        "--pipeline",
        tiny_pipeline_dir,
        "--out",
        str(tmp_path),
        "--num-images",
        "10",
        "--steps",
        "2",
        "--batch-size",
        "3",
    )
    images, labels = read_sample_folder(str(tmp_path / "samples"), channels=1)
    assert len(images) == 10 and labels == [i % 10 for i in range(10)]
    settings = json.load(open(tmp_path / "memorization.json"))["settings"]
    assert settings["num_images"] == 10 and settings["processes"] == 2  # each process sampled its share
