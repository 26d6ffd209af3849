"""Any sequence of add/remove keeps ids, labels, hashes and images consistent; save -> load is the identity."""

import hashlib
import tempfile

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spm_gen import MemoryBank

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(st.integers(0, 3), min_size=1, max_size=4), st.integers(0, 2**31)),
        st.tuples(st.just("remove_ids"), st.lists(st.integers(0, 40), min_size=1, max_size=4)),
        st.tuples(st.just("remove_label"), st.integers(0, 3)),
    ),
    max_size=12,
)


def _check(bank: MemoryBank, reference: dict) -> None:
    assert sorted(bank.ids) == sorted(reference)
    assert len(bank) == len(reference) == len(set(bank.ids))
    if not reference:
        return
    images = (bank.get_images() * 255).round().to(torch.uint8)
    for item_id, label, image, digest in zip(bank.ids, bank.labels.tolist(), images, bank.hashes):
        want_label, want_image = reference[item_id]
        assert label == want_label
        assert torch.equal(image, want_image)
        assert digest == hashlib.sha256(want_image.numpy().tobytes()).hexdigest()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.lists(st.integers(0, 3), min_size=1, max_size=8), operations=ops)
def test_add_remove_consistency_and_save_load_identity(start, operations):
    g = torch.Generator().manual_seed(len(start))
    images = torch.randint(0, 256, (len(start), 1, 4, 4), generator=g, dtype=torch.uint8)
    bank = MemoryBank.from_images(images, start)
    reference = {str(i): (lab, images[i]) for i, lab in enumerate(start)}
    for op in operations:
        if op[0] == "add":
            g = torch.Generator().manual_seed(op[2])
            new = torch.randint(0, 256, (len(op[1]), 1, 4, 4), generator=g, dtype=torch.uint8)
            for item_id, lab, image in zip(bank.add(new, op[1]), op[1], new):
                reference[item_id] = (lab, image)
        elif op[0] == "remove_ids":
            wanted = sorted({str(i) for i in op[1]} & set(reference))
            if wanted:
                bank.remove(ids=wanted)
                for item_id in wanted:
                    del reference[item_id]
        else:
            if any(lab == op[1] for lab, _ in reference.values()):
                bank.remove(labels=[op[1]])
                reference = {k: v for k, v in reference.items() if v[0] != op[1]}
        _check(bank, reference)
    with tempfile.TemporaryDirectory() as tmp:
        bank.save_pretrained(tmp)
        loaded = MemoryBank.from_pretrained(tmp)
    assert loaded.ids == bank.ids and loaded.hashes == bank.hashes and loaded.version == bank.version
    assert torch.equal(loaded.labels, bank.labels) and torch.equal(loaded.get_images(), bank.get_images())
    assert loaded.receipts == bank.receipts
    _check(loaded, reference)
