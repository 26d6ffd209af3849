import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from spm_gen import MemoryBank
from spm_gen.cli import main
from spm_gen.memory.saved_folder import SavedFolder
from tests.conftest import make_images


@pytest.fixture
def folder(tmp_path):
    """A model folder with a memory bank (the command reads only memory_bank/)."""
    path = tmp_path / "model"
    MemoryBank.from_images(make_images(12, seed=4), torch.arange(12) % 3).save_pretrained(path / "memory_bank")
    (path / "model_index.json").write_text("{}")
    return path


def _bank(path):
    return MemoryBank.from_pretrained(path / "memory_bank")


def _png(path, image):
    Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(path)
    return str(path)


def test_remove_ids_in_place_with_receipt(folder, capsys):
    assert main(["remove", str(folder), "--ids", "1", "4", "--reason", "user 17"]) == 0
    bank = _bank(folder)
    assert "1" not in bank and "4" not in bank and len(bank) == 10
    (receipt_file,) = os.listdir(folder / "receipts")
    receipt = json.load(open(folder / "receipts" / receipt_file))
    assert sorted(receipt["removed_ids"]) == ["1", "4"] and receipt["reason"] == "user 17"
    assert receipt["version_after"] == bank.version and len(receipt["hashes"]) == 2
    assert "removed 2 items" in capsys.readouterr().out


def test_remove_class_to_a_new_folder(folder, tmp_path):
    out = tmp_path / "edited"
    assert main(["remove", str(folder), "--class", "2", "--output", str(out)]) == 0
    assert 2 not in _bank(out).class_counts() and (out / "model_index.json").exists()
    assert len(_bank(folder)) == 12  # the source is untouched


def test_remove_by_image_file_and_similarity(folder, tmp_path):
    images = make_images(12, seed=4)
    assert main(["remove", str(folder), "--images", _png(tmp_path / "a.png", images[5])]) == 0
    assert "5" not in _bank(folder)
    near = (images[7] + 0.02).clamp(0, 1)
    assert main(["remove", str(folder), "--similar-to", _png(tmp_path / "b.png", near), "--threshold", "0.05"]) == 0
    assert "7" not in _bank(folder) and len(_bank(folder)) == 10


def test_ids_file_and_dry_run(folder, tmp_path, capsys):
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# request 3\n2\n3\n")
    assert main(["remove", str(folder), "--ids-file", str(ids_file), "--dry-run"]) == 0
    assert "would remove 2 items" in capsys.readouterr().out and len(_bank(folder)) == 12
    assert not (folder / "receipts").exists()


def test_bad_ids_files_and_outputs_are_named_and_change_nothing(folder, tmp_path, capsys):
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "bad.json").write_text('["2", 3')
    cases = [
        (["--ids-file", str(tmp_path / "a_folder")], "a_folder' is not a file (it is a folder)"),
        (["--ids-file", str(tmp_path / "bad.json")], "bad.json' is not a valid json list"),
        (["--ids", "2", "--output", str(tmp_path / "a_file" / "sub")], "a_file', which is a file, not a folder"),
        (["--ids", "2", "--output", ""], "--output must name a new folder, got ''"),
    ]
    for args, message in cases:
        assert main(["remove", str(folder), *args]) == 2
        assert message in capsys.readouterr().out
    assert len(_bank(folder)) == 12 and sorted(os.listdir(tmp_path)) == ["a_file", "a_folder", "bad.json", "model"]
    # a byte-order mark is not part of the first id; missing parents of --output are created
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf2\n3\n")
    out = tmp_path / "new" / "edited"
    assert main(["remove", str(folder), "--ids-file", str(tmp_path / "bom.txt"), "--output", str(out)]) == 0
    assert "2" not in _bank(out) and "3" not in _bank(out) and len(_bank(folder)) == 12


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ids", "nope"], "Unknown ids: ['nope']"),
        (["--class", "7"], "Unknown labels (no item has them): [7]; the labels present: [0, 1, 2]"),
        (["--images", "missing.png"], "cannot read image"),
        (["--similar-to", "x.png"], "needs --threshold"),
    ],
)
def test_bad_requests_change_nothing(folder, capsys, args, message):
    before = _bank(folder)
    assert main(["remove", str(folder), *args]) == 2
    assert message in capsys.readouterr().out
    after = _bank(folder)
    assert after.version == before.version and after.ids == before.ids


def test_unreadable_image_changes_nothing(folder, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["remove", str(folder), "--images", str(bad)]) == 2
    assert "cannot read image" in capsys.readouterr().out and len(_bank(folder)) == 12


def test_works_on_a_classifier_folder(tmp_path):
    from spm_gen import SPMClassifier
    from spm_gen.models.classifier_spm import load_classifier, save_classifier

    model = SPMClassifier(image_size=8, stage_channels=(8,), blocks_per_stage=(1,), embed_dim=8, num_classes=3)
    save_classifier(model, MemoryBank.from_images(make_images(9), torch.arange(9) % 3), str(tmp_path / "clf"))
    assert main(["remove", str(tmp_path / "clf"), "--class", "1"]) == 0
    _, bank = load_classifier(str(tmp_path / "clf"))
    assert 1 not in bank.class_counts()


def test_a_dry_run_that_matches_nothing_says_so_and_a_removal_of_nothing_fails(folder, tmp_path, capsys):
    far = _png(tmp_path / "far.png", torch.zeros(1, 8, 8))
    args = ["remove", str(folder), "--similar-to", far, "--threshold", "0.01"]
    assert main([*args, "--dry-run"]) == 0
    assert "nothing would be removed" in capsys.readouterr().out
    assert main(args) == 2 and "no memory item within threshold" in capsys.readouterr().out
    assert len(_bank(folder)) == 12


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--similar-to", "x.png", "--threshold", "5"],
            r"--threshold must be an RMS pixel distance in \[0, 1\], got 5",
        ),
        (["--similar-to", "x.png", "--threshold", "nan"], "got nan"),
        (["--similar-to", "x.png", "--threshold", "inf"], "got inf"),
        (["--ids", "1", "--threshold", "0.1"], "--threshold goes with --similar-to or --verify only"),
    ],
)
def test_thresholds_outside_zero_one_are_refused(folder, capsys, extra, message):
    assert main(["remove", str(folder), *extra]) == 2
    assert re.search(message, capsys.readouterr().out) and len(_bank(folder)) == 12


@pytest.mark.parametrize("inside", [".", "sub", "memory_bank/x"])
def test_an_output_inside_the_input_is_refused(folder, capsys, inside):
    assert main(["remove", str(folder), "--ids", "1", "--output", str(folder / inside)]) == 2
    assert "is inside the input folder" in capsys.readouterr().out
    assert len(_bank(folder)) == 12 and not (folder / "sub").exists()


def _remove_process(folder, *args) -> subprocess.Popen:
    command = [sys.executable, "-m", "spm_gen.cli", "remove", str(folder), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # real processes
def test_a_second_removal_waits_for_the_first_and_both_take_effect(folder):
    with SavedFolder(str(folder)).locked():  # a removal in progress elsewhere
        waiting = _remove_process(folder, "--ids", "1")
        time.sleep(2.0)
        assert waiting.poll() is None  # it waits for the lock instead of reading a bank about to change
        busy = _remove_process(folder, "--ids", "2", "--wait", "0.2")
        assert busy.wait(60) == 2 and "being changed by another process" in busy.stdout.read()
    assert waiting.wait(60) == 0
    for _ in range(3):  # and two real removals at once: neither undoes the other
        ids_left = _bank(folder).ids
        first, second = (_remove_process(folder, "--ids", item) for item in (ids_left[-1], ids_left[0]))
        assert first.wait(60) == 0 and second.wait(60) == 0
    bank = _bank(folder)
    assert "1" not in bank and len(bank) == 12 - 1 - 6
    assert len(bank.receipts) == 7 and len(os.listdir(folder / "receipts")) == 7
