import json
import subprocess
import sys

import pytest

from spm_gen import MemoryBank, SPMDiffusionPipeline
from spm_gen.cli import main
from spm_gen.paths import REPO
from tests.conftest import make_images


@pytest.mark.slow
def test_demo_runs_the_memory_bank_part_and_the_report(tmp_path, tiny_models):
    out = tmp_path / "demo"
    args = ["demo", "--output", str(out), "--models", tiny_models["root"], "--num-images", "20", "--steps", "2",
            "--memorization-models", tiny_models["memorization"]]  # fmt: skip
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
    # the memorization section: five models, the removed images deleted from the SPM's memory
    regime = json.load(open(out / "memorization" / "memorization.json"))
    names = [(r["model"], r["phase"]) for r in regime["records"]]
    assert names == [("twin", "before"), ("spm", "before"), ("spm deletion", "after"), ("oracle twin", "after"),
                     ("oracle spm", "after")]  # fmt: skip
    assert all(r["num_images"] == 200 for r in regime["records"]) and len(regime["pictures"]) == 3
    assert "## Memorization regime" in (out / "report.md").read_text()
    # beside it, the memory-only SPM: the twin's same generations, that SPM before / after, its oracle
    forgetting = regime["complete_forgetting"]
    names = [(r["model"], r["phase"]) for r in forgetting["records"]]
    assert names == [("twin", "before"), ("spm, memory-only half", "before"), ("spm, memory-only half", "after"),
                     ("oracle (spm, memory-only half)", "after")]  # fmt: skip
    assert forgetting["records"][0]["num_images"] == 200 and len(forgetting["pictures"]) == 2
    assert "## Complete forgetting: the memory-only split" in (out / "report.md").read_text()


def test_demo_without_models_says_how_to_make_them(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path), "--models", str(tmp_path / "none")]) == 2
    assert "make demo-train" in capsys.readouterr().out


def test_demo_without_memorization_models_fails_before_any_work(tmp_path, capsys):
    args = ["demo", "--output", str(tmp_path / "out"), "--memorization-models", str(tmp_path / "none")]
    assert main(args) == 2
    assert "lacks twin" in capsys.readouterr().out and not (tmp_path / "out").exists()
    from spm_gen.demo_memorization import run_memorization_demo

    with pytest.raises(FileNotFoundError, match=r"lacks twin .* removed.json .*benchmarks/memorization_regime.py"):
        run_memorization_demo(models_dir=str(tmp_path), output_dir=str(tmp_path / "out"))


def test_unknown_command_fails():
    with pytest.raises(SystemExit):
        main(["nope"])


def test_train_dry_run(capsys):
    assert main(["train", "--config", "configs/tiny.yaml", "--dry-run", "--max_train_steps", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["max_train_steps"] == 3


def test_scripts_and_the_command_share_one_error_path(tmp_path):
    for command in (["scripts/train.py"], ["-m", "spm_gen.cli", "train"]):
        result = subprocess.run([sys.executable, *command, "--config", "nope.yaml"], capture_output=True, text=True)
        assert result.returncode == 2 and result.stdout.strip() == "error: config file 'nope.yaml' does not exist"
        assert "Traceback" not in result.stderr


def test_report_without_a_removal_names_the_flags(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--output", str(tmp_path / "r")]) == 2
    assert "--remove-class" in capsys.readouterr().out


def test_the_command_line_starts_without_torch_and_has_a_version(capsys):
    probe = "import sys, spm_gen.cli; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.split() == [
        "False",
        "False",
    ]
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == "spm-gen 0.1.0"


def test_train_help_lists_the_config_keys(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps at the terminal's width
    assert "--max_train_steps V (default: 1000)" in out and "--config CONFIG" in out
    assert "--fusion_type V (default: additive)" in out
    assert "--dataset V (one of digits, folder, cifar10, hf_disk; default: digits)" in out
    assert "--max-train-steps" not in out and "--model.fusion_type V" not in out  # taken, not listed


def test_path_and_flag_mistakes_are_one_fast_line_with_a_suggestion(tmp_path, capsys):
    assert main(["remove", str(tmp_path / "nope"), "--ids", "3"]) == 2
    assert capsys.readouterr().out.strip() == f"error: FOLDER '{tmp_path / 'nope'}' does not exist"
    MemoryBank.from_images(make_images(2), [0, 1]).save_pretrained(tmp_path / "model" / "memory_bank")
    assert main(["remove", str(tmp_path / "model" / "memory_bank"), "--ids", "0"]) == 2
    out = capsys.readouterr().out
    assert "is a memory bank itself; pass the model folder holding it" in out and str(tmp_path / "model") in out
    with pytest.raises(SystemExit):
        main(["remove", str(tmp_path / "model"), "--ids", "0", "--dry-rn"])
    assert "unrecognized arguments: --dry-rn (did you mean --dry-run?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # abbreviations are off: a mistyped key is not taken for the key it begins
        main(["train", "--config", "configs/tiny.yaml", "--max_train_step", "3", "--dry-run"])
    assert "unrecognized arguments: --max_train_step 3 (did you mean --max_train_steps?)" in capsys.readouterr().err
    assert main(["remove", str(tmp_path / "model"), "--ids", "0"]) == 0
    assert "removed 1 item (per label" in capsys.readouterr().out


def test_report_on_a_classifier_folder_says_so_in_one_line(tmp_path, capsys):
    (tmp_path / "judge").mkdir()
    (tmp_path / "judge" / "config.json").write_text("{}")  # a classifier folder: no model_index.json
    assert main(["report", str(tmp_path / "judge"), "--remove-class", "3"]) == 2
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert "is a classifier folder (no model_index.json); pass an SPM pipeline folder" in line


@pytest.mark.parametrize(
    "command, message",
    [
        (
            ["scripts/train.py", "--config", "configs/tiny.yaml", "--max_train_step", "3"],
            "did you mean max_train_steps?",
        ),
        (["scripts/train_classifier.py", "--config", "configs/digits_classifier.yaml", "--hed", "x"], "mean head?"),
        (
            ["-m", "spm_gen.cli", "train", "--config", "configs/tiny.yaml", "--learning_rate", "-1"],
            "learning_rate=-1.0",
        ),
        (
            ["-m", "spm_gen.cli", "remove", "assets/digits/spm", "--class", "12", "--dry-run"],
            "Unknown labels (no item has them): [12]; the labels present: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]",
        ),
        (
            ["scripts/measure_memorization.py", "--pipeline", "runs/nope/pipeline", "--out", "out"],
            "'runs/nope/pipeline' does not exist (scripts/train.py writes it when its run finishes; "
            "assets/digits/spm works now)",
        ),
        (
            ["scripts/measure_fid.py", "--pipeline", "assets/digits/spm", "--classifier", "x/classifier", "--out", "o"],
            "scripts/train_classifier.py writes it when its run finishes; assets/digits/judge works now",
        ),
        (
            ["scripts/measure_fid.py", "--pipeline", "assets/digits/judge", "--classifier", "x", "--out", "o"],
            "'assets/digits/judge' is a classifier folder",
        ),
    ],
)
def test_config_and_folder_errors_come_before_torch_loads(command, message):
    """Each is one line and exit 2, from a process that never imported torch (so it answers in a fraction of a
    second; the times are in the closing note, not asserted here)."""
    module = command[1] if command[0] == "-m" else None
    run = (
        f"runpy.run_module({module!r}, run_name='__main__')"
        if module
        else f"runpy.run_path({command[0]!r}, run_name='__main__')"
    )
    argv = [module or command[0], *command[2 if module else 1 :]]
    probe = "\n".join(
        ["import runpy, sys", f"sys.argv = {argv!r}", "try:", f"    {run}", "except SystemExit as e:"]
        + ["    print('exit', e.code, 'torch' in sys.modules)"]
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and message in lines[0] and lines[0].startswith("error: "), result.stdout + result.stderr
    assert lines[1] == "exit 2 False"
