import math

import pytest
import torch

from spm_gen import MemoryBank, SPMClassifier
from spm_gen.memory.feature_cache import MemoryFeatureCache
from spm_gen.models.classifier_spm import load_classifier, save_classifier
from tests.conftest import make_images


def tiny_classifier(head="prototype", **kw):
    torch.manual_seed(0)
    model = SPMClassifier(
        image_size=8,
        stage_channels=(8, 16),
        blocks_per_stage=(1, 1),
        embed_dim=16,
        num_classes=4,
        head=head,
        num_neighbors=5,
        **kw,
    )
    if model.to_query is not None:  # projections away from their identity start, so the formula tests see them
        with torch.no_grad():
            model.to_query.weight.add_(0.3 * torch.randn(16, 16))
            model.to_key.weight.add_(0.3 * torch.randn(16, 16))
    return model.eval()


def tiny_bank(count=24, seed=3):
    return MemoryBank.from_images(make_images(count, seed=seed), torch.arange(count) % 4)


def test_prototype_head_equals_its_formula():
    model, bank = tiny_classifier(), tiny_bank()
    queries = make_images(5, seed=9)
    with torch.no_grad():
        q = model.embed(queries)
        m = model.embed(bank.get_images())
    labels = bank.labels
    prototypes = torch.stack([m[labels == c].mean(0) for c in range(4)])
    with torch.no_grad():
        want = torch.softmax(model.to_query(q) @ model.to_key(prototypes).T / math.sqrt(16), dim=1)
    torch.testing.assert_close(model.predict(queries, bank), want, atol=1e-5, rtol=1e-4)


def test_neighbors_head_equals_its_formula():
    model, bank = tiny_classifier("neighbors"), tiny_bank()
    queries = make_images(3, seed=9)
    with torch.no_grad():
        q, m = model.embed(queries), model.embed(bank.get_images())
    want = torch.zeros(3, 4)
    for i in range(3):
        nearest = torch.cdist(q[i : i + 1], m)[0].topk(5, largest=False).indices
        with torch.no_grad():
            keys, query = model.to_key(m[nearest]), model.to_query(q[i])
        weights = torch.softmax(keys @ query / math.sqrt(16), dim=0)
        for w, j in zip(weights, nearest):
            want[i, bank.labels[j]] += w
    torch.testing.assert_close(model.predict(queries, bank), want, atol=1e-5, rtol=1e-4)


def _count_encodings(model) -> list[int]:
    """The number of real (unpadded) memory images of each later `encode_memory` call of `model`."""
    calls, encode = [], model.encode_memory

    def counting(images, labels, timestep=None):
        calls.append(int((images.flatten(1).abs().sum(1) > 0).sum()))
        return encode(images, labels, timestep)

    model.encode_memory = counting
    return calls


@pytest.mark.parametrize("head", ["prototype", "neighbors"])
def test_removal_predicts_as_a_bank_that_never_held_the_items(head):
    model, bank = tiny_classifier(head), tiny_bank()
    queries = make_images(6, seed=11)
    model.predict(queries, bank)  # warm cache
    bank.remove(ids=["1", "6", "7"])
    sums_before = (
        [t.clone() for t in model.memory_cache.label_sums(bank, model, (4, 16))] if head == "prototype" else None
    )
    encoded = _count_encodings(model)
    after = model.predict(queries, bank)
    assert encoded == []  # the removal needed no encoding: the cached features were enough
    if head == "prototype":  # the prototypes were updated from the change log alone, to float precision
        recomputed = MemoryFeatureCache().label_sums(bank, model, (4, 16))
        for kept, fresh in zip(sums_before, recomputed):
            torch.testing.assert_close(kept, fresh)
    keep = [i for i in range(24) if str(i) not in ("1", "6", "7")]
    never = MemoryBank.from_images(
        make_images(24, seed=3)[keep], (torch.arange(24) % 4)[keep], ids=[str(i) for i in keep]
    )
    fresh = tiny_classifier(head)
    torch.testing.assert_close(after, fresh.predict(queries, never), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("head", ["prototype", "neighbors"])
def test_removing_a_class_zeroes_its_probability(head):
    model, bank = tiny_classifier(head), tiny_bank()
    queries = make_images(6, seed=11)
    assert (model.predict(queries, bank)[:, 2] > 0).all() or head == "neighbors"
    bank.remove(labels=[2])
    probs = model.predict(queries, bank)
    assert torch.equal(probs[:, 2], torch.zeros(6))
    torch.testing.assert_close(probs.sum(1), torch.ones(6))


def test_additions_and_weight_changes_resync():
    model, bank = tiny_classifier(), tiny_bank()
    queries = make_images(2, seed=11)
    model.predict(queries, bank)
    bank.add(make_images(2, seed=50), [0, 0])
    encoded = _count_encodings(model)
    model.predict(queries, bank)
    assert encoded == [2] and len(model.memory_cache) == 26  # the two new items, and nothing else, encoded
    with torch.no_grad():
        model.encoder.proj.weight.mul_(2)
    changed = model.predict(queries, bank)
    assert not torch.allclose(changed, tiny_classifier().predict(queries, bank))


def test_linear_head_and_round_trip(tmp_path):
    model, bank = tiny_classifier(), tiny_bank()
    save_classifier(model, bank, str(tmp_path / "clf"))
    loaded, loaded_bank = load_classifier(str(tmp_path / "clf"))
    queries = make_images(3, seed=5)
    torch.testing.assert_close(loaded.predict(queries, loaded_bank), model.predict(queries, bank))
    linear = tiny_classifier("linear")
    assert linear.predict(queries).shape == (3, 4)
    save_classifier(linear, None, str(tmp_path / "lin"))
    assert load_classifier(str(tmp_path / "lin"))[1] is None


def test_bad_input():
    model = tiny_classifier()
    with pytest.raises(ValueError, match="non-empty memory_bank"):
        model.predict(make_images(1), None)
    empty = tiny_bank(4)
    empty.remove(ids=["0", "1", "2", "3"])
    with pytest.raises(ValueError, match="non-empty memory_bank"):
        model.predict(make_images(1), empty)
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, 8, 8\)"):
        model.predict(make_images(1, size=16), tiny_bank())
    with pytest.raises(ValueError, match="memory images have shape"):
        model.predict(make_images(1), MemoryBank.from_images(make_images(2, size=16), [0, 1]))
    with pytest.raises(ValueError, match="Unknown ids"):
        tiny_bank().remove(ids=["nope"])
    with pytest.raises(ValueError, match="head must be one of"):
        tiny_classifier("knn")


def test_prototypes_follow_the_bank_when_another_reader_synced_the_cache_first():
    model, bank = tiny_classifier(), tiny_bank()
    queries = make_images(6, seed=11)
    model.predict(queries, bank)
    bank.remove(ids=["1", "6", "7"])
    model.memory_cache.features(bank, bank.ids[:2], model)  # the shared cache follows the removal first
    keep = [i for i in range(24) if str(i) not in ("1", "6", "7")]
    never = MemoryBank.from_images(
        make_images(24, seed=3)[keep], (torch.arange(24) % 4)[keep], ids=[str(i) for i in keep]
    )
    torch.testing.assert_close(
        model.predict(queries, bank), tiny_classifier().predict(queries, never), atol=1e-6, rtol=1e-5
    )


def test_an_item_added_and_removed_between_two_predictions_leaves_the_prototypes_as_a_fresh_model_sees_them():
    model, bank = tiny_classifier(), tiny_bank()
    queries = make_images(3, seed=11)
    model.predict(queries, bank)
    ids = bank.add(make_images(2, seed=50), [1, 2])
    bank.remove(ids=[ids[0], "5"])  # one item never summed, one summed
    torch.testing.assert_close(model.predict(queries, bank), tiny_classifier().predict(queries, bank))
    for followed, fresh in zip(model.class_sums(bank), MemoryFeatureCache().label_sums(bank, model, (4, 16))):
        torch.testing.assert_close(followed, fresh)
