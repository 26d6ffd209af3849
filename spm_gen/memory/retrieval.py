"""Which memory items a query reads: seeded per-class selection and exact chunked nearest neighbours.

Seeded selection ranks every item by a hash of (seed, item id). The rank of an item therefore depends
only on the item itself, never on which other items are present or on their storage order, so a bank
after ``remove`` selects exactly what a bank built without those items selects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

# splitmix64 constants (Steele, Lea, Flood 2014); numpy uint64 arithmetic wraps modulo 2**64.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def id_keys(ids: Sequence[str]) -> np.ndarray:
    """Stable 64-bit keys of item ids (blake2b), independent of process and platform."""
    out = np.empty(len(ids), dtype=np.uint64)
    for i, item_id in enumerate(ids):
        out[i] = int.from_bytes(hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest(), "little")
    return out


def seed_from_generator(generator: torch.Generator | None) -> int:
    """Draws one 63-bit seed from `generator` (or from torch's global RNG when None)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=device).item())


def selection_ranks(keys: np.ndarray, seed: int) -> np.ndarray:
    """Per-item pseudo-random ranks: splitmix64 of (key + seed * golden ratio). Shape of `keys`."""
    with np.errstate(over="ignore"):
        z = keys + np.uint64(seed) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def select_rows(candidate_rows: np.ndarray, keys: np.ndarray, k: int | None, seed: int) -> np.ndarray:
    """The `k` candidate rows with the smallest seeded ranks, ordered by rank (all of them when k is None).

    Ties between ranks are broken by the key itself, so the result never depends on storage order.
    """
    ranks = selection_ranks(keys[candidate_rows], seed)
    order = np.lexsort((keys[candidate_rows], ranks))
    if k is not None:
        order = order[:k]
    return candidate_rows[order]


@dataclass(frozen=True)
class VectorSource:
    """Items as float vectors, read in chunks (`chunk(start, end)`) or by row (`rows(index)`).

    `sq_norms`, when given, holds every item's squared Euclidean norm (saves a pass over the items).
    """

    num_items: int
    chunk: Callable[[int, int], torch.Tensor]
    rows: Callable[[torch.Tensor], torch.Tensor]
    sq_norms: torch.Tensor | None = None

    @classmethod
    def from_tensor(cls, vectors: torch.Tensor, sq_norms: torch.Tensor | None = None) -> VectorSource:
        return cls(len(vectors), lambda s, e: vectors[s:e], lambda idx: vectors[idx.to(vectors.device)], sq_norms)


def _candidate_topk(queries: torch.Tensor, source: VectorSource, k: int, chunk_size: int) -> torch.Tensor:
    """Rows of the k smallest squared distances per query, by the matmul expansion |x|^2 - 2 q.x (+ |q|^2)."""
    best_d = torch.empty((queries.shape[0], 0), device=queries.device)
    best_i = torch.empty((queries.shape[0], 0), dtype=torch.long, device=queries.device)
    for start in range(0, source.num_items, chunk_size):
        end = min(start + chunk_size, source.num_items)
        chunk = source.chunk(start, end).to(device=queries.device, dtype=queries.dtype)
        sq = source.sq_norms[start:end] if source.sq_norms is not None else (chunk * chunk).sum(1)
        d = torch.addmm(sq.to(queries.device)[None], queries, chunk.T, beta=1.0, alpha=-2.0)
        part_d, part_i = torch.topk(d, min(k, end - start), dim=1, largest=False, sorted=False)
        best_d = torch.cat([best_d, part_d], dim=1)
        best_i = torch.cat([best_i, part_i + start], dim=1)
        if best_d.shape[1] > k:
            best_d, pos = torch.topk(best_d, k, dim=1, largest=False, sorted=False)
            best_i = torch.gather(best_i, 1, pos)
    return best_i


def chunked_nearest(
    queries: torch.Tensor, source: VectorSource, k: int, chunk_size: int = 32768, exact_pool: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest items (Euclidean) of each query, reading the items one chunk at a time.

    Candidates come from the fast matmul expansion (`k * exact_pool` of them); their distances are then
    recomputed directly, so near-duplicates get exact distances instead of cancellation noise.

    Args:
        queries (`torch.Tensor` of shape `(Q, D)`): float query vectors.
        source: the items; `k` must not exceed `source.num_items`.
        k: neighbours per query.
        chunk_size: items per chunk; extra memory is about `Q * chunk_size` floats.
        exact_pool: candidates per neighbour that are re-ranked with exact distances.

    Returns:
        `(distances, rows)`, both of shape `(Q, k)`, sorted by increasing distance.
    """
    queries = queries.float()
    cand = _candidate_topk(queries, source, min(source.num_items, k * exact_pool), chunk_size)
    vectors = source.rows(cand.reshape(-1)).to(queries.device).float().reshape(*cand.shape, -1)
    exact = torch.linalg.vector_norm(vectors - queries[:, None], dim=2)
    dist, pos = torch.sort(exact, dim=1, stable=True)
    return dist[:, :k], torch.gather(cand, 1, pos)[:, :k]


def chunked_within(
    queries: torch.Tensor, source: VectorSource, threshold: float, chunk_size: int = 32768
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All (query, row) pairs whose Euclidean distance is at most `threshold`, computed exactly.

    Returns:
        `(query_index, rows, distances)` as three 1-D tensors.
    """
    queries = queries.float()
    q_idx, r_idx, dists = [], [], []
    for start in range(0, source.num_items, chunk_size):
        end = min(start + chunk_size, source.num_items)
        chunk = source.chunk(start, end).to(device=queries.device, dtype=torch.float32)
        d = torch.cdist(queries, chunk, compute_mode="donot_use_mm_for_euclid_dist")
        qi, ri = torch.nonzero(d <= threshold, as_tuple=True)
        q_idx.append(qi)
        r_idx.append(ri + start)
        dists.append(d[qi, ri])
    if not q_idx:
        empty = torch.empty(0, dtype=torch.long)
        return empty, empty, torch.empty(0)
    return torch.cat(q_idx), torch.cat(r_idx), torch.cat(dists)
