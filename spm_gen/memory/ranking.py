"""Which memory items a query reads: a seeded ranking, independent of storage order.

The ranking orders every item by a hash of (seed, item id). The rank of an item therefore depends
only on the item itself, never on which other items are present or on their storage order, so a bank
after ``remove`` selects exactly what a bank built without those items selects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from ..utils.validation import check_positive_int

# splitmix64 constants (Steele, Lea, Flood 2014); numpy uint64 arithmetic wraps modulo 2**64.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def id_keys(ids: Sequence[str]) -> np.ndarray:
    """Stable 64-bit keys of item ids (blake2b), independent of process and platform."""
    digests = b"".join(hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest() for item_id in ids)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def seed_from_generator(generator: torch.Generator | None) -> int:
    """Draws one 63-bit seed from `generator` (or from torch's global RNG when None)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=device).item())


def derived_seed(generator: torch.Generator) -> int:
    """A 63-bit seed for memory retrieval derived from `generator`'s initial seed (splitmix64's golden ratio
    step), leaving the generator's own stream to the noise."""
    return (generator.initial_seed() * int(_GOLDEN) + 0x5EED) % (2**63 - 1)


def seeded_ranks(keys: np.ndarray, seed: int) -> np.ndarray:
    """Per-item pseudo-random ranks: splitmix64 of (key + seed * golden ratio). Shape of `keys`."""
    with np.errstate(over="ignore"):
        z = keys + np.uint64(seed) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def ranked_rows(candidate_rows: np.ndarray, keys: np.ndarray, k: int | None, seed: int) -> np.ndarray:
    """The `k` candidate rows with the smallest seeded ranks, ordered by rank (all of them when k is None).

    Ties between ranks are broken by the key itself, so the result never depends on storage order.
    """
    ranks = seeded_ranks(keys[candidate_rows], seed)
    order = np.lexsort((keys[candidate_rows], ranks))
    if k is not None:
        order = order[:k]
    return candidate_rows[order]


def ranked_ids(store, label: int | None, k: int | None, seed: int) -> list[str]:
    """The ids of the `k` items of `store` (a `RowStore`) with `label` (all items when None) with the smallest
    seeded ranks, in rank order; all candidates when k is None."""
    if k is not None:
        check_positive_int("k", k)
    if store.n == 0:
        raise ValueError("the memory bank is empty")
    candidates = np.arange(store.n) if label is None else store.rows_with_label(label)
    if candidates.size == 0:
        raise ValueError(f"no memory items with label {label}")
    return [store.ids[r] for r in ranked_rows(candidates, store.keys, k, seed)]
