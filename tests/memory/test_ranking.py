import numpy as np

from spm_gen.memory.ranking import id_keys, ranked_rows, seeded_ranks


def test_id_keys_are_stable_and_distinct():
    keys = id_keys(["a", "b", "a"])
    assert keys[0] == keys[2] != keys[1]
    assert id_keys(["a"])[0] == np.uint64(
        int.from_bytes(__import__("hashlib").blake2b(b"a", digest_size=8).digest(), "little")
    )


def test_select_rows_ignores_storage_order():
    keys = id_keys([str(i) for i in range(50)])
    rows = np.arange(50)
    perm = np.random.default_rng(0).permutation(50)
    a = ranked_rows(rows, keys, 10, seed=7)
    b = perm[ranked_rows(np.arange(50), keys[perm], 10, seed=7)]
    assert a.tolist() == b.tolist()
    assert not np.array_equal(seeded_ranks(keys, 1), seeded_ranks(keys, 2))
