import hashlib

import numpy as np
import pytest
import torch

from spm_gen import MemoryBank
from spm_gen.memory.readout import class_readout
from tests.conftest import make_images, make_labels


def test_from_images_float_and_uint8_agree(tiny_images):
    a = MemoryBank.from_images(tiny_images, make_labels(12))
    b = MemoryBank.from_images((tiny_images * 255).round().to(torch.uint8), make_labels(12))
    assert a.hashes == b.hashes
    assert torch.equal(a.get_images(), tiny_images)
    assert torch.equal(b.get_images(), tiny_images)


def test_basic_accessors(tiny_bank, tiny_images):
    assert len(tiny_bank) == 12
    assert tiny_bank.ids == [str(i) for i in range(12)]
    assert "3" in tiny_bank and "12" not in tiny_bank
    assert tiny_bank.labels.tolist() == make_labels(12).tolist()
    expected = hashlib.sha256((tiny_images[5] * 255).round().to(torch.uint8).numpy().tobytes()).hexdigest()
    assert tiny_bank.hashes[5] == expected
    assert torch.equal(tiny_bank.get_images(["7", "2"]), tiny_images[[7, 2]])
    assert tiny_bank.get_labels(["7", "2"]).tolist() == [3, 2]
    assert tiny_bank.class_counts() == {0: 3, 1: 3, 2: 3, 3: 3}


def test_int_ids_become_strings(tiny_images):
    bank = MemoryBank.from_images(tiny_images[:3], [0, 1, 2], ids=[10, 11, 12])
    assert bank.ids == ["10", "11", "12"]


@pytest.mark.parametrize(
    "images, labels, ids, match",
    [
        (torch.rand(3, 8, 8), [0, 1, 2], None, "shape"),
        (torch.randint(0, 255, (3, 1, 8, 8), dtype=torch.int32), [0, 1, 2], None, "dtype"),
        (torch.rand(3, 1, 8, 8) * 2, [0, 1, 2], None, r"\[0, 1\]"),
        (torch.rand(3, 1, 8, 8), [0, 1], None, "expected 3 labels"),
        (torch.rand(3, 1, 8, 8), [0, -1, 2], None, "non-negative"),
        (torch.rand(3, 1, 8, 8), [0.5, 1.0, 2.0], None, "integers"),
        (torch.rand(3, 1, 8, 8), [0, 1, 2], ["a", "b", "a"], "duplicate ids: \\['a'\\]"),
        (torch.rand(3, 1, 8, 8), [0, 1, 2], ["a", "b"], "expected 3 ids"),
        (torch.rand(3, 1, 8, 8), [0, 1, 2], ["a", None, "c"], "None"),
    ],
)
def test_from_images_rejects_bad_input(images, labels, ids, match):
    with pytest.raises(ValueError, match=match):
        MemoryBank.from_images(images, labels, ids)


def test_version_changes_on_every_modification(tiny_bank):
    v0 = tiny_bank.version
    tiny_bank.seeded_ids(0, 2)
    tiny_bank.get_images()
    assert tiny_bank.version == v0
    tiny_bank.add(make_images(1, seed=9), [0])
    v1 = tiny_bank.version
    tiny_bank.remove(ids=["0"])
    v2 = tiny_bank.version
    tiny_bank.compute_embeddings()
    assert len({v0, v1, v2, tiny_bank.version}) == 4


def test_remove_ids_returns_receipt_and_keeps_the_rest(tiny_bank, tiny_images):
    before = tiny_bank.version
    receipt = tiny_bank.remove(ids=["1", "6"], reason="user request")
    assert sorted(receipt.removed_ids) == ["1", "6"]
    assert sorted(receipt.labels) == [1, 2]
    assert set(receipt.hashes) == {MemoryBank.from_images(tiny_images[[1, 6]], [1, 2]).hashes[i] for i in (0, 1)}
    assert receipt.version_before == before and receipt.version_after == tiny_bank.version
    assert receipt.reason == "user request" and receipt.time_utc.endswith("Z")
    assert len(tiny_bank) == 10 and "1" not in tiny_bank and "6" not in tiny_bank
    for i in range(12):
        if i not in (1, 6):
            assert torch.equal(tiny_bank.get_images([str(i)])[0], tiny_images[i])
            assert tiny_bank.get_labels([str(i)]).item() == i % 4
    assert tiny_bank.receipts == [receipt]


def test_remove_by_labels_and_hashes(tiny_bank):
    target_hash = tiny_bank.hashes[5]
    receipt = tiny_bank.remove(labels=[2], hashes=[target_hash])
    assert sorted(receipt.removed_ids, key=int) == ["2", "5", "6", "10"]
    assert 2 not in tiny_bank.class_counts()
    assert target_hash not in tiny_bank.hashes


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ids": ["3", "nope", "missing"]}, "Unknown ids: \\['nope', 'missing'\\]"),
        ({"labels": [1, 7]}, r"Unknown labels .*\[7\]; the labels present: \[0, 1, 2, 3\]"),
        ({"hashes": ["00" * 32]}, "Unknown hashes"),
        ({}, "needs ids=, labels= or hashes="),
        ({"ids": []}, "needs ids=, labels= or hashes="),
    ],
)
def test_bad_removal_leaves_bank_unchanged(tiny_bank, kwargs, match):
    state = (tiny_bank.ids, tiny_bank.hashes, tiny_bank.version, tiny_bank.get_images().clone())
    with pytest.raises(ValueError, match=match):
        tiny_bank.remove(**kwargs)
    assert (tiny_bank.ids, tiny_bank.hashes, tiny_bank.version) == state[:3]
    assert torch.equal(tiny_bank.get_images(), state[3])
    assert tiny_bank.receipts == []


def test_removal_drops_the_data_not_a_mask(tiny_bank, tiny_images):
    tiny_bank.compute_embeddings()
    removed_embedding = tiny_bank.embeddings[4].clone()
    tiny_bank.remove(ids=["4", "11"])
    removed = (tiny_images[[4, 11]] * 255).round().to(torch.uint8)
    for buffer in tiny_bank.buffers():
        if buffer.dtype == torch.uint8:
            assert not (buffer[:, None] == removed[None]).flatten(2).all(2).any()
        else:
            assert not (buffer == removed_embedding).all(1).any()


def test_add_items(tiny_bank):
    new = make_images(3, seed=5)
    ids = tiny_bank.add(new, [0, 9, 9])
    assert ids == ["12", "13", "14"]
    assert torch.equal(tiny_bank.get_images(ids), new)
    assert tiny_bank.class_counts()[9] == 2
    assert tiny_bank.add(make_images(1, seed=6), [1], ids=["extra"]) == ["extra"]


@pytest.mark.parametrize(
    "images, labels, ids, match",
    [
        (make_images(1, seed=5), [0], ["3"], "already in the memory bank: \\['3'\\]"),
        (make_images(1, size=16, seed=5), [0], None, "this memory bank holds"),
        (make_images(2, seed=5), [0], None, "expected 2 labels"),
    ],
)
def test_add_rejects_bad_input(tiny_bank, images, labels, ids, match):
    version = tiny_bank.version
    with pytest.raises(ValueError, match=match):
        tiny_bank.add(images, labels, ids)
    assert len(tiny_bank) == 12 and tiny_bank.version == version


def test_add_needs_embeddings_when_the_bank_stores_them(tiny_bank):
    tiny_bank.compute_embeddings()
    with pytest.raises(ValueError, match="pass embeddings="):
        tiny_bank.add(make_images(1, seed=5), [0])
    emb = torch.randn(1, tiny_bank.embeddings.shape[1])
    tiny_bank.add(make_images(1, seed=5), [0], ids=["e"], embeddings=emb)
    assert torch.equal(tiny_bank.embeddings[tiny_bank.row_indices(["e"])], emb)


def test_select_is_seeded_and_per_class(tiny_bank):
    a = tiny_bank.seeded_ids(1, 2, generator=torch.Generator().manual_seed(0))
    b = tiny_bank.seeded_ids(1, 2, generator=torch.Generator().manual_seed(0))
    assert a == b and len(a) == 2 and set(a) <= {"1", "5", "9"}
    assert sorted(tiny_bank.seeded_ids(1, None, generator=torch.Generator().manual_seed(0))) == ["1", "5", "9"]
    assert len(tiny_bank.seeded_ids(1, 100)) == 3
    seeds = {tuple(tiny_bank.seeded_ids(1, 2, generator=torch.Generator().manual_seed(s))) for s in range(20)}
    assert len(seeds) > 1


def test_select_after_removal_equals_a_bank_that_never_held_the_items():
    images, labels = make_images(200, seed=3), torch.arange(200) % 5
    full = MemoryBank.from_images(images, labels)
    removed = {str(i) for i in range(0, 200, 7)} | {str(i) for i in range(200) if i % 5 == 2}
    keep = [i for i in range(200) if str(i) not in removed]
    rng = np.random.default_rng(0)
    order = rng.permutation(keep).tolist()  # storage order must not matter either
    never = MemoryBank.from_images(images[order], labels[order], ids=[str(i) for i in order])
    full.remove(ids=sorted(removed))
    for label in range(5):
        for k in (None, 1, 5, 30):
            for seed in range(3):
                # what a class-`label` query reads (class 2 was emptied: it reads the fallback)
                got = class_readout(full, torch.tensor([label]), k, torch.Generator().manual_seed(seed)).read
                want = class_readout(never, torch.tensor([label]), k, torch.Generator().manual_seed(seed)).read
                assert got == want


def test_select_all_items_and_bad_arguments(tiny_bank):
    everything = tiny_bank.seeded_ids(None, 4, generator=torch.Generator().manual_seed(0))
    assert len(everything) == 4 and len({tiny_bank.get_labels([i]).item() for i in tiny_bank.seeded_ids(None)}) == 4
    tiny_bank.remove(labels=[3])
    with pytest.raises(ValueError, match="no memory items with label 3"):
        tiny_bank.seeded_ids(3, 4)
    for k in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"k must be a positive integer, got {k!r}"):
            tiny_bank.seeded_ids(0, k)


def test_labels_beyond_a_class_index_and_non_finite_queries_are_refused():
    bank = MemoryBank.from_images(make_images(4), [0, 1, 2, 3], embeddings=torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"labels are class indices up to 2,147,483,647, got \[9223372036854775808\]"):
        bank.add(make_images(1), np.array([2**63], dtype=np.uint64), embeddings=torch.randn(1, 3))
    queries = torch.randn(3, 3)
    queries[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"must be finite: rows \[1\] hold NaN or inf"):
        bank.nearest(queries, k=1)
    with pytest.raises(ValueError, match="k must be a positive integer, got 1.0"):
        bank.nearest_images(make_images(1), k=1.0)
    assert len(bank) == 4


def test_nearest_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    emb, queries = torch.randn(300, 16, generator=g), torch.randn(7, 16, generator=g)
    labels = torch.arange(300) % 3
    bank = MemoryBank.from_images(make_images(300), labels, embeddings=emb)
    result = bank.nearest(queries, k=5)
    d = torch.cdist(queries, emb)
    want_d, want_i = torch.topk(d, 5, largest=False)
    assert result.ids == [[str(i) for i in row] for row in want_i.tolist()]
    torch.testing.assert_close(result.distances, want_d)
    by_label = bank.nearest(queries, k=4, label=2)
    d_masked = d.masked_fill(labels[None] != 2, float("inf"))
    assert by_label.ids == [[str(i) for i in row] for row in torch.topk(d_masked, 4, largest=False).indices.tolist()]


def test_nearest_bad_input(tiny_bank):
    with pytest.raises(ValueError, match="compute_embeddings"):
        tiny_bank.nearest(torch.randn(2, 64), 1)
    tiny_bank.compute_embeddings()
    with pytest.raises(ValueError, match=r"shape \(Q, 64\)"):
        tiny_bank.nearest(torch.randn(2, 10), 1)
    with pytest.raises(ValueError, match="label 9"):
        tiny_bank.nearest(torch.randn(2, 64), 1, label=9)


def test_find_similar_in_pixel_space(tiny_bank, tiny_images):
    noisy = (tiny_images[[3]] + 0.01).clamp(0, 1)
    assert set(tiny_bank.find_similar(tiny_images[[3, 8]], threshold=0.0)) == {"3", "8"}
    assert tiny_bank.find_similar(noisy, threshold=0.05) == ["3"]
    assert tiny_bank.find_similar(noisy, k=1) == ["3"]
    assert tiny_bank.find_similar(make_images(1, seed=99), threshold=0.01) == []
    with pytest.raises(ValueError, match="threshold=, k="):
        tiny_bank.find_similar(noisy)
    with pytest.raises(ValueError, match="this memory bank holds"):
        tiny_bank.find_similar(make_images(1, size=16), k=1)


def test_find_similar_with_an_encoder(tiny_bank, tiny_images):
    from spm_gen import PixelEncoder

    encoder = PixelEncoder(size=4)
    assert tiny_bank.find_similar(tiny_images[[6]], k=1, encoder=encoder) == ["6"]
    tiny_bank.compute_embeddings(encoder)
    assert tiny_bank.embedding_info == {"type": "pixel", "size": 4}
    assert tiny_bank.find_similar(tiny_images[[6]], threshold=1e-4, encoder=encoder) == ["6"]


def test_an_empty_bank_grows_from_add():
    bank = MemoryBank(image_shape=(1, 8, 8))
    assert len(bank) == 0 and bank.find_similar(make_images(1), k=1) == []
    with pytest.raises(ValueError, match="empty"):
        bank.seeded_ids(0, 1)
    emb = torch.randn(3, 5)
    assert bank.add(make_images(3, seed=8), [0, 1, 1], embeddings=emb) == ["0", "1", "2"]
    assert torch.equal(bank.embeddings, emb) and bank.nearest(emb[[2]], k=1).ids == [["2"]]


def test_ids_are_never_reused_and_removal_arguments_are_checked(tiny_bank):
    tiny_bank.remove(ids=["11", "10"])
    assert tiny_bank.add(make_images(1, seed=9), [0]) == ["12"]  # not "10": a receipt names it
    tiny_bank.add(make_images(1, seed=10), [0], ids=["²"])  # a non-decimal id does not break later adds
    assert tiny_bank.add(make_images(1, seed=11), [1]) == ["13"]
    with pytest.raises(ValueError, match="labels must be integers"):
        tiny_bank.remove(labels=["3"])
    with pytest.raises(ValueError, match="labels must be integers"):
        tiny_bank.remove(labels=[True])
    with pytest.raises(ValueError, match="ids must be a string or a list of strings, got 5"):
        tiny_bank.remove(ids=5)
