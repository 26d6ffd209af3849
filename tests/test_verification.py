"""`spm-gen remove --verify`: the receipt says whether the model still produces each removed image."""

import glob
import json
import shutil

import pytest
import torch

import spm_gen.verification as verification
from spm_gen import SPMDiffusionPipeline
from spm_gen.cli import main
from spm_gen.verification import VerificationSettings, verify_removal


def _receipt(folder) -> dict:
    (path,) = glob.glob(f"{folder}/receipts/*.json")
    return json.load(open(path))


@pytest.fixture
def folder(tiny_pipeline_dir, tmp_path):
    shutil.copytree(tiny_pipeline_dir, tmp_path / "spm")
    return tmp_path / "spm"


@pytest.mark.slow
def test_verify_writes_seeded_settings_and_a_verdict_per_removed_item(folder):
    ids = SPMDiffusionPipeline.from_pretrained(folder).memory_bank.ids[:2]
    args = ["remove", str(folder), "--ids", *ids, "--verify", "--verify-samples", "4", "--require-verified"]
    assert main(args) == 0  # an almost untrained model copies nothing
    block = _receipt(folder)["verification"]
    assert block["settings"]["samples"] == 4 and block["settings"]["threshold"] == 0.04
    labels = [item["label"] for item in block["items"]]
    assert block["settings"]["class_seeds"] == {str(c): c for c in sorted(set(labels))}
    assert [item["id"] for item in block["items"]] == ids and block["verified"] and block["reproduced"] == []
    for item in block["items"]:
        assert item["verdict"] == "not reproduced in 4 samples" and item["nearest_sample"] > 0.04
        assert 0 < item["nearest_remaining"] and item["near_copies"] == 0
    # the removal itself committed before the verification
    assert not set(ids) & set(SPMDiffusionPipeline.from_pretrained(folder).memory_bank.ids)


@pytest.mark.slow
def test_a_reproduced_image_is_reported_and_fails_require_verified(folder, monkeypatch, capsys):
    bank = SPMDiffusionPipeline.from_pretrained(folder).memory_bank
    item = bank.ids[0]
    copy = bank.get_images([item]).cpu()

    def copies(pipe, label, settings):  # a model that memorized the image: every sample is the image
        return copy.expand(settings.samples, -1, -1, -1).clone()

    monkeypatch.setattr(verification, "sample_class", copies)
    args = ["remove", str(folder), "--ids", item, "--verify", "--verify-samples", "3", "--require-verified"]
    assert main(args) == 3
    entry = _receipt(folder)["verification"]["items"][0]
    assert entry["near_copies"] == 3 and entry["reproduced"] and entry["nearest_sample"] == 0
    assert entry["verdict"].startswith("reproduced: 3 of 3 samples within 0.04; the weights memorized it")
    assert f"--exclude_ids {item}" in entry["verdict"]
    assert "still produces" in capsys.readouterr().out
    assert item not in SPMDiffusionPipeline.from_pretrained(folder).memory_bank  # the removal stays


@pytest.mark.slow
def test_dry_run_and_output_with_verify(folder, tmp_path, capsys):
    ids = SPMDiffusionPipeline.from_pretrained(folder).memory_bank.ids[:1]
    assert main(["remove", str(folder), "--ids", *ids, "--verify", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "--verify would sample 64 images of each of the classes" in out and not (folder / "receipts").exists()
    target = tmp_path / "edited"
    args = ["remove", str(folder), "--ids", *ids, "--verify", "--verify-samples", "2", "--output", str(target)]
    assert main(args) == 0
    assert _receipt(target)["verification"]["items"][0]["id"] == ids[0] and not (folder / "receipts").exists()


@pytest.mark.slow
def test_verify_refuses_classifiers_twins_and_stray_flags(tmp_path, tiny_models, capsys):
    judge = tmp_path / "judge"
    shutil.copytree(tiny_models["judge"], judge)
    assert main(["remove", str(judge), "--ids", "0", "--verify"]) == 2
    assert "is a classifier folder" in capsys.readouterr().out
    assert main(["remove", tiny_models["twin"], "--ids", "0", "--verify"]) == 2
    assert main(["remove", str(judge), "--ids", "0", "--require-verified"]) == 2
    assert "go with --verify" in capsys.readouterr().out
    twin = SPMDiffusionPipeline.from_pretrained(tiny_models["twin"])
    with pytest.raises(ValueError, match="reads no memory"):
        verify_removal(twin, ["0"], [0], torch.zeros(1, 1, 8, 8), VerificationSettings(samples=1))
    with pytest.raises(ValueError, match="samples"):
        VerificationSettings(samples=0).check()
