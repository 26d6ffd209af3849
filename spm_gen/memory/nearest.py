"""Nearest-neighbour search over a memory bank's rows: exact chunked k-nearest and within-distance search
(the primitives), and the bank's searches over its `RowStore`: nearest stored embeddings, nearest images
(pixel space or any encoder), and items within a distance of given images."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..metrics.near_copy import rms_scale
from ..utils.images import to_unit_range
from ..utils.validation import check_positive_int
from .encoders import ImageEncoder
from .items import as_uint8_images, nonfinite_rows
from .rows import RowStore


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


@dataclass
class NearestResult:
    """`ids[q]` are the k nearest items of query q; `distances` `(Q, k)` their Euclidean distances."""

    ids: list[list[str]]
    distances: torch.Tensor


def _label_rows(store: RowStore, label: int | None) -> np.ndarray | None:
    if label is None:
        return None
    rows = store.rows_with_label(label)
    if rows.size == 0:
        raise ValueError(f"no memory items with label {label}")
    return rows


def _result(store: RowStore, dist: torch.Tensor, rows: torch.Tensor) -> NearestResult:
    return NearestResult(ids=[[store.ids[r] for r in row] for row in rows.tolist()], distances=dist)


def nearest_embeddings(store: RowStore, queries: torch.Tensor, k: int, label: int | None = None) -> NearestResult:
    """Exact k nearest stored embeddings (Euclidean) of each query `(Q, D)`, optionally among one label."""
    stored = store.embeddings
    if stored is None:
        raise ValueError("this bank has no embeddings; call compute_embeddings(encoder) first")
    check_positive_int("k", k)
    if queries.ndim != 2 or queries.shape[1] != stored.shape[1]:
        raise ValueError(f"query embeddings must have shape (Q, {stored.shape[1]}), got {tuple(queries.shape)}")
    bad = nonfinite_rows(queries)
    if bad:
        raise ValueError(f"query embeddings must be finite: rows {bad[:5]} hold NaN or inf")
    if store.n == 0:
        raise ValueError("the memory bank is empty")
    rows_np, sq_norms = _label_rows(store, label), store.embedding_sq_norms()
    if rows_np is None:
        source = VectorSource.from_tensor(stored, sq_norms)
    else:
        rows_map = torch.from_numpy(rows_np).to(stored.device)
        source = VectorSource(
            len(rows_np),
            lambda s, e: stored[rows_map[s:e]],
            lambda idx: stored[rows_map[idx.to(stored.device)]],
            sq_norms[rows_map],
        )
    dist, rows = chunked_nearest(queries.to(stored.device), source, min(k, source.num_items))
    if rows_np is not None:
        rows = rows_map[rows]
    return _result(store, dist, rows)


def image_space(
    store: RowStore,
    images: torch.Tensor | np.ndarray,
    encoder: ImageEncoder | None,
    rows: np.ndarray | None = None,
) -> tuple[torch.Tensor, VectorSource]:
    """Queries and a vector source over stored items (all, or `rows`) in pixel or encoder space.

    Pixel space: [0, 1] images flattened and divided by sqrt(C * H * W), so that a Euclidean distance is a
    root-mean-square pixel difference. Encoder space: the encoder's embeddings (the stored ones when the
    encoder made them; otherwise every item is encoded).
    """
    queries_u8 = as_uint8_images(images, None if encoder is not None else store.image_shape)
    device = store.device
    index = (torch.arange(store.n) if rows is None else torch.from_numpy(rows)).to(device)
    if encoder is None:
        scale = 255.0 * rms_scale(store.image_shape)

        def vectors(idx: torch.Tensor) -> torch.Tensor:
            return store.images[index[idx.to(device)]].flatten(1).float() / scale

        source = VectorSource(len(index), lambda s, e: vectors(torch.arange(s, e)), vectors)
        return queries_u8.to(device).flatten(1).float() / scale, source
    made_by_encoder = store.embeddings is not None and store.embedding_info == encoder.describe()
    stored = store.embeddings if made_by_encoder else encode_rows(store, encoder)
    return encoder(to_unit_range(queries_u8)).to(stored.device), VectorSource.from_tensor(stored[index])


def encode_rows(store: RowStore, encoder: ImageEncoder, batch_size: int = 1024, progress=None) -> torch.Tensor:
    """`encoder` applied to every stored image (float [0, 1]), in row order, in batches."""
    chunks = []
    starts = range(0, store.n, batch_size)
    for start in progress(starts) if progress is not None else starts:
        chunks.append(encoder(to_unit_range(store.images[start : start + batch_size])).float())
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)


@torch.no_grad()
def nearest_images(
    store: RowStore,
    images: torch.Tensor | np.ndarray,
    k: int,
    label: int | None,
    encoder: ImageEncoder | None,
) -> NearestResult:
    """The k stored items nearest to each image (pixel space when `encoder` is None), optionally of one label."""
    check_positive_int("k", k)
    if store.n == 0:
        raise ValueError("no memory items")
    rows = _label_rows(store, label)
    queries, source = image_space(store, images, encoder, rows)
    dist, found = chunked_nearest(queries, source, min(k, source.num_items))
    found = found.cpu()
    if rows is not None:
        found = torch.from_numpy(rows)[found]
    return _result(store, dist, found)


@torch.no_grad()
def find_similar(
    store: RowStore,
    images: torch.Tensor | np.ndarray,
    threshold: float | None,
    k: int | None,
    encoder: ImageEncoder | None,
) -> list[str]:
    """Ids of items within `threshold` of some image and/or among each image's `k` nearest, closest first."""
    if threshold is None and k is None:
        raise ValueError("find_similar needs threshold=, k=, or both")
    if threshold is not None and (isinstance(threshold, bool) or not math.isfinite(threshold) or threshold < 0):
        raise ValueError(f"threshold must be a finite non-negative distance, got {threshold}")
    if k is not None:
        check_positive_int("k", k)
    if store.n == 0:
        return []
    queries, source = image_space(store, images, encoder)
    if k is not None:
        dist, rows = chunked_nearest(queries, source, min(k, store.n))
        keep = dist <= threshold if threshold is not None else torch.ones_like(dist, dtype=torch.bool)
        dist, rows = dist[keep], rows[keep]
    else:
        _, rows, dist = chunked_within(queries, source, threshold)
    order = torch.argsort(dist.cpu(), stable=True)
    found: dict[str, None] = {}
    for r in rows.cpu()[order].tolist():
        found.setdefault(store.ids[r])
    return list(found)
