import json

import pytest

from spm_gen import MemoryBank, SPMDiffusionPipeline
from spm_gen.cli import main
from spm_gen.training import load_config, parse_overrides, train


@pytest.fixture(scope="module")
def tiny_trained_pipeline(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    return train(load_config("configs/tiny.yaml", parse_overrides(["--output_dir", str(run)])))


def test_demo_builds_removes_saves_and_reloads(tmp_path, tiny_trained_pipeline):
    out = tmp_path / "demo"
    args = ["demo", "--output", str(out), "--pipeline", tiny_trained_pipeline, "--per-class", "1", "--steps", "2"]
    assert main(args) == 0
    summary = json.load(open(out / "summary.json"))
    assert summary["items_before"] == 1797
    assert summary["items_after"] == 1797 - summary["removed_class_items"] - 5
    assert summary["class_still_in_memory"] is False and summary["removed_ids_still_in_memory"] == []
    bank = MemoryBank.from_pretrained(out / "memory_bank")
    assert 3 not in bank.class_counts() and len(bank.receipts) == 2
    assert (out / "before_after.png").stat().st_size > 1000
    assert json.load(open(out / "receipts.json"))[0]["reason"] == "demo: forget class 3"
    # the generation part: the saved pipeline has forgotten class 3 and 20 more images
    generation = json.load(open(out / "generation_summary.json"))
    assert generation["class_in_saved_memory"] is False
    edited = SPMDiffusionPipeline.from_pretrained(out / "pipeline_after_removal").memory_bank
    original = SPMDiffusionPipeline.from_pretrained(tiny_trained_pipeline).memory_bank
    removed = original.class_counts()[3] + 20
    assert len(edited) == len(original) - removed == generation["memory_items_after"]
    for picture in ("samples_before.png", "samples_after.png", "forgotten_class.png"):
        assert (out / picture).stat().st_size > 100


def test_demo_without_a_pipeline_says_how_to_make_one(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path), "--pipeline", str(tmp_path / "none")]) == 2
    assert "train one with scripts/train.py" in capsys.readouterr().out


def test_unknown_command_fails():
    with pytest.raises(SystemExit):
        main(["nope"])


def test_train_dry_run(capsys):
    assert main(["train", "--config", "configs/tiny.yaml", "--dry-run", "--max_train_steps", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["max_train_steps"] == 3
