import os

import pytest
import torch

from experiments.memorization_scenario import (
    ScenarioSettings,
    duplicates_case,
    memory_only_case,
    write_duplicated_folder,
)
from spm_gen import MemoryBank, SPMDiffusionPipeline
from spm_gen.data import load_digits_dataset, load_image_folder
from spm_gen.training import load_config, train
from spm_gen.unlearning.twin import TwinUnlearning

SETTINGS = ScenarioSettings(
    per_target=3, num_inference_steps=2, memory_size=4, twin=TwinUnlearning(steps=2), batch_size=8
)


def _load(path: str) -> SPMDiffusionPipeline:
    pipe = SPMDiffusionPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_duplicated_folder_holds_the_copies(tmp_path):
    data = load_digits_dataset(image_size=8, split="test")
    data = data.subset(torch.arange(len(data)) < 30)
    originals = write_duplicated_folder(data, [data.ids[0], data.ids[5]], copies=4, root=str(tmp_path))
    folder = load_image_folder(str(tmp_path), channels=1)
    assert len(folder) == 30 + 2 * 3 and set(originals) <= set(folder.ids)
    bank = MemoryBank.from_images(folder.images, folder.labels, folder.ids)
    receipt = bank.remove(hashes=bank.get_hashes(originals))
    assert len(receipt.removed_ids) == 8 and len(bank) == 30 - 2
    with pytest.raises(ValueError, match="nope"):
        write_duplicated_folder(data, ["nope"], copies=2, root=str(tmp_path / "x"))


@pytest.mark.slow
def test_both_cases_on_tiny_models(tmp_path):
    data = load_digits_dataset(image_size=8, split="train")
    data = data.subset(torch.arange(len(data)) < 60)
    targets = write_duplicated_folder(data, data.ids[:2], copies=5, root=str(tmp_path / "data"))

    def run(name, **extra):
        data_folder = {"dataset": "folder", "data_path": str(tmp_path / "data")}
        return train(load_config("configs/tiny.yaml", {"output_dir": str(tmp_path / name), **data_folder, **extra}))

    spm_dir, twin_dir = run("spm"), run("twin", fusion_type="none")
    spm = _load(spm_dir)
    copies = set(spm.memory_bank.get_hashes(targets))
    result = duplicates_case(spm, _load(twin_dir), targets, SETTINGS, str(tmp_path / "a"))
    assert result["copies_removed"] == 10 and len(spm.memory_bank) == 60 - 2
    assert not copies & set(spm.memory_bank.hashes)  # the claim: no copy of a target is left in memory
    for key in ("spm_before", "spm_after", "twin_before", "twin_after"):  # a near copy <=> the nearest is near
        counts, nearest = result[key], result["nearest_distance"][key]
        assert len(counts) == 2 and all((c > 0) == (d <= SETTINGS.threshold) for c, d in zip(counts, nearest))
    assert os.path.getsize(tmp_path / "a" / "gallery_twin.png") > 2000

    fresh = load_digits_dataset(image_size=8, split="test")
    images, labels = fresh.images[:2].float() / 255, fresh.labels[:2]
    result = memory_only_case(_load(spm_dir), _load(spm_dir), images, labels, 3, SETTINGS, str(tmp_path / "b"))
    assert result["copies_added"] == 6
    assert result["after_equals_never_added"] and result["spm_after"] == result["never_added"]
