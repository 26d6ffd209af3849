import json

import pytest

from spm_gen import SPMClassifier, SPMDiffusionPipeline
from spm_gen.metric_runs import measure_fid, measure_memorization
from spm_gen.metrics.memorization import memorization
from spm_gen.models.classifier_spm import save_classifier
from spm_gen.sampling import read_sample_folder

pytestmark = pytest.mark.slow  # trains a tiny pipeline


def test_memorization_run(tiny_pipeline_dir, tmp_path):
    result = measure_memorization(tiny_pipeline_dir, str(tmp_path), num_images=6, steps=2, batch_size=4)
    images, labels = read_sample_folder(str(tmp_path / "samples"), channels=1)
    bank = SPMDiffusionPipeline.from_pretrained(tiny_pipeline_dir).memory_bank  # the run's training set
    assert result["settings"]["num_images"] == 6
    assert result["memorization_rate"] == memorization(images, bank).memorization_rate
    assert images.shape == (6, 1, 8, 8) and labels == [0, 1, 2, 3, 4, 5]
    assert json.load(open(tmp_path / "memorization.json")) == result
    assert (tmp_path / "nn_distances.png").stat().st_size > 1000


def test_fid_run_with_oracle(tiny_pipeline_dir, tmp_path):
    classifier = SPMClassifier(image_size=8, stage_channels=(8,), blocks_per_stage=(1,), embed_dim=6, head="linear")
    save_classifier(classifier, None, str(tmp_path / "clf"))
    result = measure_fid(
        tiny_pipeline_dir,
        str(tmp_path / "clf"),
        str(tmp_path / "out"),
        num_images=9,
        exclude_classes=[3],
        oracle_dir=tiny_pipeline_dir,
        steps=2,
    )
    assert result["fid_remaining_classes"]["num_images"][0] == 9
    assert result["fid_oracle"]["fid"] == pytest.approx(0.0, abs=1e-4)  # same pipeline, same seeds
    _, labels = read_sample_folder(str(tmp_path / "out" / "samples"), channels=1)
    assert 3 not in labels
