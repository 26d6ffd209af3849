import json
import os

import pytest
import torch

from spm_gen import MemoryBank
from spm_gen.cli import main
from spm_gen.models.classifier_spm import load_classifier
from spm_gen.reporting import ReportConfig, run_report
from spm_gen.reporting.generations import Generations
from spm_gen.reporting.markdown import conclusion, sanity_warnings
from spm_gen.reporting.pictures import gallery_indices, gallery_title
from spm_gen.reporting.report_rows import RemovedData, RowContext, report_row
from spm_gen.sampling import read_sample_folder
from spm_gen.unlearning.twin import TwinUnlearning


@pytest.mark.slow
def test_report_end_to_end(tiny_models, tmp_path):
    bank_before = MemoryBank.from_pretrained(os.path.join(tiny_models["spm"], "memory_bank"))
    others = [i for i, label in zip(bank_before.ids, bank_before.labels.tolist()) if label != 3][:2]
    m = tiny_models
    config = ReportConfig(
        m["spm"],
        str(tmp_path / "report"),
        remove_classes=[3],
        remove_ids=others,
        classifier_dir=m["judge"],
        oracle_dir=m["oracle"],
        twin_dir=m["twin"],
        num_images=20,
        num_inference_steps=2,
        memory_size=4,
        twin=TwinUnlearning(steps=2),
        batch_size=8,
    )
    summary = run_report(config)

    names = [row["model"] for row in summary["rows"]]
    assert names == [
        "SPM before removal",
        "SPM after removal",
        "twin before",
        "twin after random-label (SalUn)",
        "oracle (retrained without)",
    ]
    assert [row["guidance_scale"] for row in summary["rows"]] == [0.3, 0.3, 0.0, 0.0, 0.0]  # each model's own
    removed = summary["removal"]
    assert removed["num_items"] == int((bank_before.labels == 3).sum()) + 2 and removed["individual_ids"] == others
    assert all(row["num_images"] == 20 and row["fid_remaining"] is not None for row in summary["rows"])
    # UA of the SPM after removal: 100 - the judge's accuracy on the saved class-3 generations
    images, labels = read_sample_folder(str(tmp_path / "report" / "samples" / "spm_after"), 1)
    judge, judge_bank = load_classifier(m["judge"])
    class_3 = images[torch.tensor(labels) == 3]
    accuracy = (judge.predict(class_3, judge_bank).argmax(1) == 3).float().mean().item()
    assert summary["rows"][1]["ua"] == pytest.approx(100 * (1 - accuracy))
    assert summary["rows"][0]["fid_oracle"] is not None and summary["rows"][4]["fid_oracle"] is None
    # the input pipeline is untouched; the edited copy holds none of the removed items
    assert MemoryBank.from_pretrained(os.path.join(m["spm"], "memory_bank")).version == bank_before.version
    after = MemoryBank.from_pretrained(str(tmp_path / "report" / "spm_after_removal" / "memory_bank"))
    assert 3 not in after.class_counts() and not set(others) & set(after.ids)
    # the SPM's removal time is the receipt's; the twin's unlearning takes longer than the SPM's deletion
    assert summary["rows"][1]["removal_s"] == pytest.approx(after.receipts[-1].duration_s)
    assert summary["rows"][3]["removal_s"] > summary["rows"][1]["removal_s"]
    # the same seeds: the twin's generations changed under gradient ascent
    twin_before, twin_after = (
        read_sample_folder(str(tmp_path / "report" / "samples" / f), 1)[0] for f in ("twin_before", "twin_after")
    )
    assert not torch.equal(twin_before, twin_after)
    report = (tmp_path / "report" / "report.md").read_text()
    assert report.count("\n| ") == 6 and "FID_O" in report and "![class_3.png](grids/class_3.png)" in report
    assert "**In one line:** Deleting from the SPM's memory took " in report and "The twin after " in report
    removed_ids = summary["removal"]["ids"]
    assert f"The {len(removed_ids)} removed ids</summary>\n\n{', '.join(removed_ids)}\n" in report
    for picture in ["grids/class_3.png", "gallery_spm.png", "gallery_twin.png", "hist_nearest_removed.png"]:
        assert (tmp_path / "report" / picture).stat().st_size > 2000, picture
    assert json.loads((tmp_path / "report" / "report.json").read_text())["rows"] == summary["rows"]


def test_the_gallery_shows_every_kind_of_removal_and_says_how_many():
    labels = torch.tensor([3, 3, 3, 1, 2, 3, 5])  # class 3 (4 items) and three removed by id
    removed = RemovedData([str(i) for i in range(7)], torch.zeros(7, 1, 4, 4), labels, [3])
    shown = gallery_indices(removed, 4)
    assert shown == [3, 0, 4, 1]  # by id and of class 3 in turn
    assert gallery_title(removed, shown) == (
        "4 of the 7 removed images (2 of class 3's 4, 2 of the 3 removed by id):\neach (first column) with its "
        "nearest generations"
    )
    assert gallery_indices(removed, 10) == [3, 0, 4, 1, 6, 2, 5]


def test_the_one_line_conclusion_names_what_was_measured():
    rows = [
        {"role": "spm_before", "ua": 6.7, "fid_remaining": 0.479, "near_copies": 0, "removal_s": None},
        {"role": "spm_after", "ua": 96.7, "fid_remaining": 0.474, "near_copies": 0, "removal_s": 0.0012},
        {"role": "twin_after", "model": "twin after random-label (SalUn)", "ua": 83.3, "fid_remaining": 3.64}
        | {"removal_s": 339.4, "near_copies": 0},
        {"role": "oracle", "ua": 100.0, "fid_remaining": 0.37, "near_copies": 0, "removal_s": None},
    ]
    assert conclusion(rows) == (
        "Deleting from the SPM's memory took 1.2 ms: UA 6.7 -> 96.7, FID on the remaining classes 0.479 -> 0.474, "
        "near-copies of removed images 0 -> 0 (the oracle: UA 100.0). The twin after random-label (SalUn) took "
        "339 s: UA 83.3, FID 3.64."
    )
    no_judge = [{**row, "ua": None, "fid_remaining": None} for row in rows[:2]]
    assert conclusion(no_judge) == "Deleting from the SPM's memory took 1.2 ms: near-copies of removed images 0 -> 0."


def test_measure_row_counts_near_copies_and_memorized_samples(tmp_path):
    g = torch.Generator().manual_seed(0)
    training_images = torch.randint(0, 256, (12, 1, 8, 8), generator=g).float() / 255
    training = MemoryBank.from_images(training_images, torch.arange(12) % 3)
    removed = RemovedData(["0", "1"], training.get_images(["0", "1"]), torch.tensor([0, 1]), [])
    noise = torch.rand(3, 1, 8, 8, generator=g)
    images = torch.cat(
        [training.get_images(["0"]), training.get_images(["0"]) + 0.01, training.get_images(["5"]), noise]
    )
    gen = Generations("m", str(tmp_path), images.clamp(0, 1), torch.zeros(6, dtype=torch.long), 1.0)
    row, distances = report_row(gen, RowContext(training, removed, str(tmp_path / "w"), threshold=0.05))
    assert row["near_copies"] == 2  # the copy and the near copy of item 0; item 5 was not removed
    assert row["memorization_rate"] == pytest.approx(3 / 6)  # three copies of training images, three noise images
    assert row["ua"] is None and row["fid_remaining"] is None  # no judge
    assert distances["nearest_removed"][:2].max() <= 0.011


@pytest.mark.slow
def test_bad_requests_fail_before_sampling(tiny_models, tmp_path, capsys):
    out = tmp_path / "r"
    with pytest.raises(ValueError, match="remove_classes"):
        run_report(ReportConfig(tiny_models["spm"], str(out)))
    code = main(["report", tiny_models["spm"], "--remove-class", "42", "--output", str(out), "--num-images", "2"])
    assert code == 2 and "42" in capsys.readouterr().out
    assert not out.exists()  # the folder it made for the report is gone again, being empty
    code = main(["report", tiny_models["spm"], "--remove-class", "3", "--output", str(out), "--guidance-scale", "-1"])
    assert code == 2 and "--guidance-scale=-1" in capsys.readouterr().out and not out.exists()  # the flag typed
    code = main(["report", tiny_models["spm"], "--remove-class", "3", "--output", str(out), "--twin-steps", "0"])
    assert code == 2 and "--twin-steps=0" in capsys.readouterr().out and not out.exists()
    for flag, value in (("--seed", str(2**70)), ("--gallery-size", "0")):
        code = main(["report", tiny_models["spm"], "--remove-class", "3", "--output", str(out), flag, value])
        assert code == 2 and f"{flag}={value}" in capsys.readouterr().out and not out.exists()
    with pytest.raises(ValueError, match="give the SPM pipeline"):
        run_report(ReportConfig(tiny_models["twin"], str(out), remove_classes=[3]))
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["report", tiny_models["spm"], "--remove-class", "42", "--output", str(out)]) == 2
    assert os.listdir(out) == ["notes.txt"]  # a folder that was there before stays


def test_numbers_that_look_broken_are_flagged():
    rows = [
        {"model": "SPM before removal", "ua": 100.0, "fid_remaining": 1.5},
        {"model": "SPM after removal", "ua": 100.0, "fid_remaining": 1.6},
        {"model": "twin before", "ua": 10.0, "fid_remaining": 250.0},
    ]
    warnings = sanity_warnings(rows)
    assert len(warnings) == 2 and warnings[0].startswith("SPM before removal: UA is 100")
    assert warnings[1].startswith("twin before: FID 250")
    assert sanity_warnings(rows[1:2]) == []  # UA 100 after a removal is the goal


def test_a_report_inside_the_pipeline_folder_is_refused(tmp_path):
    (tmp_path / "pipe").mkdir()
    config = ReportConfig(str(tmp_path / "pipe"), str(tmp_path / "pipe" / "report"), remove_classes=[3])
    with pytest.raises(ValueError, match="is inside the input folder"):
        config.check()
    ReportConfig(str(tmp_path / "pipe"), str(tmp_path / "report"), remove_classes=[3]).check()
