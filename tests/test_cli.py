import json

import pytest

from spm_gen import MemoryBank, SPMDiffusionPipeline
from spm_gen.cli import main


@pytest.mark.slow
def test_demo_runs_the_memory_bank_part_and_the_report(tmp_path, tiny_models):
    out = tmp_path / "demo"
    args = ["demo", "--output", str(out), "--models", tiny_models["root"], "--num-images", "20", "--steps", "2"]
    assert main(args) == 0
    summary = json.load(open(out / "summary.json"))
    assert summary["items_before"] == 1797
    assert summary["items_after"] == 1797 - summary["removed_class_items"] - 5
    assert summary["class_still_in_memory"] is False and summary["removed_ids_still_in_memory"] == []
    bank = MemoryBank.from_pretrained(out / "memory_bank")
    assert 3 not in bank.class_counts() and len(bank.receipts) == 2
    assert (out / "before_after.png").stat().st_size > 1000
    assert json.load(open(out / "receipts.json"))[0]["reason"] == "demo: forget class 3"
    # the report: class 3 and 20 more images removed from a copy of the SPM; all five models measured
    report = json.load(open(out / "report.json"))
    original = SPMDiffusionPipeline.from_pretrained(tiny_models["spm"]).memory_bank
    assert report["removal"]["num_items"] == original.class_counts()[3] + 20
    assert len(report["removal"]["individual_ids"]) == 20 and len(report["rows"]) == 5
    edited = SPMDiffusionPipeline.from_pretrained(out / "spm_after_removal").memory_bank
    assert len(edited) == len(original) - report["removal"]["num_items"] and 3 not in edited.class_counts()
    assert "| SPM after removal |" in (out / "report.md").read_text()


def test_demo_without_models_says_how_to_make_them(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path), "--models", str(tmp_path / "none")]) == 2
    assert "make demo-train" in capsys.readouterr().out


def test_unknown_command_fails():
    with pytest.raises(SystemExit):
        main(["nope"])


def test_train_dry_run(capsys):
    assert main(["train", "--config", "configs/tiny.yaml", "--dry-run", "--max_train_steps", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["max_train_steps"] == 3
