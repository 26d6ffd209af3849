import pytest
import torch

from spm_gen.memory.ranking import derived_seed
from spm_gen.memory.readout import MemoryReadout, class_readout, nearest_readout
from tests.conftest import make_images
from tests.tiny import read_items


def test_from_labels_groups_by_label_and_falls_back_to_all_items():
    items = torch.tensor([0, 2, 1, 0, 2])
    readout = MemoryReadout.from_labels(torch.tensor([2, 0, 7, -1, 2]), items)
    assert read_items(readout) == [[1, 4], [0, 3], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [1, 4]]
    with pytest.raises(ValueError, match="memory_tokens must be"):
        readout.check_tokens(torch.zeros(4, 1, 2))


def test_class_readout_reads_each_class_and_decides_the_empty_class_fallback(tiny_bank):
    g = torch.Generator().manual_seed(0)
    readout = class_readout(tiny_bank, torch.tensor([0, 1, 0]), 2, g)
    assert readout.read[0] == readout.read[2] and len(readout.read[0]) == 2
    assert all(tiny_bank.get_labels(r).eq(label).all() for r, label in zip(readout.read, [0, 1, 0]))
    assert sorted(readout.ids) == sorted(set(readout.read[0] + readout.read[1]))
    tiny_bank.remove(labels=[3])
    fallback = class_readout(tiny_bank, torch.tensor([0, 3]), 2, torch.Generator().manual_seed(0))
    # class 3 reads everything selected: class 0's two items and its own seeded pick of two among all items,
    # both picks under the call's one seed (derived from the generator, which is not advanced)
    own_pick = tiny_bank.seeded_ids(None, 2, seed=derived_seed(torch.Generator().manual_seed(0)))
    assert fallback.read[1] == fallback.ids and set(fallback.ids) == set(fallback.read[0]) | set(own_pick)
    assert len(fallback.read[0]) == 2 and tiny_bank.get_labels(fallback.read[0]).eq(0).all()
    with pytest.raises(ValueError, match=r"no memory items for labels \[3\] \(empty_memory='error'\)"):
        class_readout(tiny_bank, torch.tensor([0, 3]), 2, None, empty_memory="error")
    with pytest.raises(ValueError, match="empty_memory must be one of"):
        class_readout(tiny_bank, torch.tensor([0]), 2, None, empty_memory="skip")


def test_class_readout_guidance_branches(tiny_bank):
    labels = torch.tensor([0, 1])
    same = class_readout(tiny_bank, labels, 2, torch.Generator().manual_seed(0), unconditional="class")
    everything = class_readout(tiny_bank, labels, 2, torch.Generator().manual_seed(0), unconditional="all")
    assert read_items(same)[2:] == read_items(same)[:2]
    assert read_items(everything)[2] == read_items(everything)[3] == list(range(4))


def test_nearest_readout_reads_the_items_nearest_each_reference(tiny_bank):
    references = tiny_bank.get_images(["5", "2"])
    readout, labels = nearest_readout(tiny_bank, references, None, 1)
    assert readout.read == [["5"], ["2"]] and labels.tolist() == [1, 2]
    assert read_items(readout) == [[0], [1]] and readout.ids == ["5", "2"]
    with pytest.raises(ValueError, match="2 reference_images but 1 class_labels"):
        nearest_readout(tiny_bank, make_images(2), torch.tensor([0]), 1)
