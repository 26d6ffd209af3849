import pytest
import torch

from spm_gen.memory.bank import MemoryBank
from spm_gen.reporting.generations import Generations
from spm_gen.reporting.memorization_regime import (
    RegimeSettings,
    choose_removed,
    make_reference,
    memory_influence,
    nearest_variation,
    regime_record,
    remaining_bank,
)


def _training():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (12, 1, 4, 4), dtype=torch.uint8)
    return MemoryBank.from_images(images, torch.arange(12) % 3, [f"i{k}" for k in range(12)])


def _generations(images, folder=""):
    return Generations("g", folder, images, torch.zeros(len(images), dtype=torch.long), 0.0)


def test_choose_removed_takes_each_class_most_copied_image_and_ranks_classes_by_copies():
    bank = _training()
    images = bank.get_images()
    # i4 (class 1) copied 3 times, i3 (class 0) twice, i0 (class 0) once; class 2 is not copied at all
    samples = torch.cat([images[[4, 4, 4, 3, 3, 0]], torch.rand(4, 1, 4, 4)])
    chosen = choose_removed(_generations(samples), bank, RegimeSettings(num_removed=3, threshold=1e-3))
    assert list(chosen)[:2] == ["i4", "i3"] and chosen["i4"] == 3 and chosen["i3"] == 2
    third = list(chosen)[2]
    assert chosen[third] == 0 and int(bank.get_labels([third])[0]) == 2  # class 2's closest image, not copied
    assert len(choose_removed(_generations(samples), bank, RegimeSettings(num_removed=9, threshold=1e-3))) == 3


def test_measure_counts_near_copies_of_removed_and_memorization_against_the_rest(tmp_path):
    bank = _training()
    reference = make_reference(bank, ["i1", "i2"], None, str(tmp_path))
    assert reference.remaining.ids == [f"i{k}" for k in range(12) if k not in (1, 2)]
    images = bank.get_images()
    samples = torch.cat([images[[1, 1, 2, 5]], torch.rand(2, 1, 4, 4)])
    record, nearest = regime_record("m", "before", _generations(samples), reference, RegimeSettings(threshold=1e-3))
    assert record["near_copies_of_removed"] == 3 and record["fid_remaining"] is None
    assert record["memorization_rate"] == pytest.approx(1 / 6)  # only the copy of i5: the removed are not counted
    assert float(nearest[3]) == pytest.approx(0, abs=1e-6)  # the copy of i5, a remaining image


def test_remaining_bank_is_the_training_set_without_the_removed_in_order():
    bank = _training()
    rest = remaining_bank(bank, ["i0", "i11"])
    assert rest.ids == [f"i{k}" for k in range(1, 11)]
    assert torch.equal(rest.get_images(), bank.get_images(rest.ids)) and rest is not bank


def test_nearest_variation_reads_one_block_per_reference():
    refs = torch.zeros(2, 1, 2, 2)
    variations = torch.cat([torch.full((3, 1, 2, 2), 0.5), torch.full((3, 1, 2, 2), 0.25)])
    assert nearest_variation(refs, variations) == pytest.approx([0.5, 0.25])


def test_memory_influence_samples_with_the_image_itself_and_with_another_of_its_class():
    from tests.tiny import tiny_pipeline

    pipe = tiny_pipeline()
    bank = pipe.memory_bank
    removed = [bank.ids[0], bank.ids[5]]
    everything = RegimeSettings(per_class=3, threshold=1.0, num_inference_steps=1)  # every sample within 1.0
    result = memory_influence(pipe, bank, removed, everything)
    assert list(result) == removed
    for item, row in result.items():
        other = row["other_item"]
        assert other != item and int(bank.get_labels([other])[0]) == int(bank.get_labels([item])[0])
        assert row["near_copies_when_memory_holds"] == {"itself": 3, "other": 3}
    nothing = RegimeSettings(per_class=3, threshold=1e-6, num_inference_steps=1)
    counts = memory_influence(pipe, bank, removed[:1], nothing)[removed[0]]["near_copies_when_memory_holds"]
    assert counts == {"itself": 0, "other": 0}


def test_a_new_regime_measure_is_one_declaration(tmp_path, monkeypatch):
    from spm_gen.reporting import memorization_regime
    from spm_gen.reporting.measures import Measure

    bank = _training()
    reference = make_reference(bank, ["i1"], None, str(tmp_path))
    extra = Measure("copies_of_i1", "copies of i1", of=lambda m: int((m.to_removed <= 1e-3).sum()))
    monkeypatch.setattr(memorization_regime, "REGIME_MEASURES", [*memorization_regime.REGIME_MEASURES, extra])
    samples = torch.cat([bank.get_images()[[1, 1]], torch.rand(2, 1, 4, 4)])
    record, _ = regime_record("m", "after", _generations(samples), reference, RegimeSettings(threshold=1e-3))
    assert record["copies_of_i1"] == 2 == record["near_copies_of_removed"]
    assert list(record)[:3] == ["model", "phase", "near_copies_of_removed"]
