"""Similarity search over a memory bank's items: exact k nearest stored embeddings, nearest images (pixel
space or any encoder), and items within a distance of given images. `MemoryBank` inherits it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .encoders import ImageEncoder
from .items import as_uint8_images
from .retrieval import VectorSource, chunked_nearest, chunked_within


@dataclass
class NearestResult:
    """`ids[q]` are the k nearest items of query q; `distances` `(Q, k)` their Euclidean distances."""

    ids: list[list[str]]
    distances: torch.Tensor


class BankSearchMixin:
    """Search methods of `MemoryBank` (they read its row stores: `_images`, `_embeddings`, `_labels`,
    `_ids`, `_n`)."""

    def nearest(self, embeddings: torch.Tensor, k: int, label: int | None = None) -> NearestResult:
        """Exact k nearest stored embeddings (Euclidean) of each query, optionally among one label.

        Args:
            embeddings (`torch.Tensor` of shape `(Q, D)`): queries in the space of the stored embeddings.
            k: neighbours per query (capped at the number of candidates).
            label: restrict the search to items with this label.
        """
        if self._embeddings is None:
            raise ValueError("this bank has no embeddings; call compute_embeddings(encoder) first")
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if embeddings.ndim != 2 or embeddings.shape[1] != self._embeddings.shape[1]:
            raise ValueError(
                f"query embeddings must have shape (Q, {self._embeddings.shape[1]}), got {tuple(embeddings.shape)}"
            )
        stored, sq_norms = self._embeddings[: self._n], self._embedding_sq_norms()
        if label is None:
            rows_map, source = None, VectorSource.from_tensor(stored, sq_norms)
        else:
            rows_np = np.flatnonzero(self._labels[: self._n] == int(label))
            if rows_np.size == 0:
                raise ValueError(f"no memory items with label {label}")
            rows_map = torch.from_numpy(rows_np).to(stored.device)
            source = VectorSource(
                len(rows_np),
                lambda s, e: stored[rows_map[s:e]],
                lambda idx: stored[rows_map[idx.to(stored.device)]],
                sq_norms[rows_map],
            )
        if source.num_items == 0:
            raise ValueError("the memory bank is empty")
        dist, rows = chunked_nearest(embeddings.to(stored.device), source, min(k, source.num_items))
        if rows_map is not None:
            rows = rows_map[rows]
        return NearestResult(ids=[[self._ids[r] for r in row] for row in rows.tolist()], distances=dist)

    def _image_source(
        self, images: torch.Tensor | np.ndarray, encoder: ImageEncoder | None, rows: np.ndarray | None = None
    ) -> tuple[torch.Tensor, VectorSource]:
        """Queries and a vector source over stored items (all, or `rows`) in pixel or encoder space.

        Pixel space: [0, 1] images flattened and divided by sqrt(C * H * W), so that a Euclidean distance is
        a root-mean-square pixel difference. Encoder space: the encoder's embeddings (the stored ones when it
        made them).
        """
        queries_u8 = as_uint8_images(images, None if encoder is not None else self.image_shape)
        device = self._images.device
        index = torch.arange(self._n) if rows is None else torch.from_numpy(rows)
        index = index.to(device)
        if encoder is None:
            scale = 255.0 * math.sqrt(math.prod(self.image_shape))

            def vectors(idx: torch.Tensor) -> torch.Tensor:
                return self._images[index[idx.to(device)]].flatten(1).float() / scale

            source = VectorSource(len(index), lambda s, e: vectors(torch.arange(s, e)), vectors)
            return queries_u8.to(device).flatten(1).float() / scale, source
        stored = self.embeddings if self._embedding_info == encoder.describe() else None
        if stored is None:
            stored = self._encode_all(encoder, 1024, show_progress=False)
        return encoder(queries_u8.float() / 255.0).to(stored.device), VectorSource.from_tensor(stored[index])

    @torch.no_grad()
    def nearest_images(
        self,
        images: torch.Tensor | np.ndarray,
        k: int,
        label: int | None = None,
        encoder: ImageEncoder | None = None,
    ) -> NearestResult:
        """The k stored items nearest to each given image (pixel space by default; see `find_similar`).

        Args:
            images: `(Q, C, H, W)` float in [0, 1] or uint8.
            k: neighbours per image (capped at the number of candidates).
            label: only items with this label.
            encoder: an embedding function; None means pixel space.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        rows = None if label is None else np.flatnonzero(self._labels[: self._n] == int(label))
        if self._n == 0 or (rows is not None and rows.size == 0):
            raise ValueError(f"no memory items{'' if label is None else f' with label {label}'}")
        queries, source = self._image_source(images, encoder, rows)
        dist, found = chunked_nearest(queries, source, min(k, source.num_items))
        found = found.cpu()
        if rows is not None:
            found = torch.from_numpy(rows)[found]
        return NearestResult(ids=[[self._ids[r] for r in row] for row in found.tolist()], distances=dist)

    @torch.no_grad()
    def find_similar(
        self,
        images: torch.Tensor | np.ndarray,
        threshold: float | None = None,
        k: int | None = None,
        encoder: ImageEncoder | None = None,
    ) -> list[str]:
        """Ids of items near the given images, closest first, without repeats.

        By default distances are in pixel space: the Euclidean distance of [0, 1] images divided by
        sqrt(C * H * W) (a root-mean-square pixel difference; 0 means identical). With `encoder`, they are
        Euclidean distances between its embeddings (the stored ones when it made them).

        Args:
            images: `(Q, C, H, W)` float in [0, 1] or uint8.
            threshold: keep items within this distance of some query image.
            k: keep each query's k nearest items (within `threshold` when both are given).
            encoder: an embedding function; None means pixel space.
        """
        if threshold is None and k is None:
            raise ValueError("find_similar needs threshold=, k=, or both")
        if threshold is not None and threshold < 0:
            raise ValueError(f"threshold must be non-negative, got {threshold}")
        if k is not None and k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if self._n == 0:
            return []
        queries, source = self._image_source(images, encoder)
        if k is not None:
            dist, rows = chunked_nearest(queries, source, min(k, self._n))
            keep = dist <= threshold if threshold is not None else torch.ones_like(dist, dtype=torch.bool)
            dist, rows = dist[keep], rows[keep]
        else:
            _, rows, dist = chunked_within(queries, source, threshold)
        order = torch.argsort(dist.cpu(), stable=True)
        found: dict[str, None] = {}
        for r in rows.cpu()[order].tolist():
            found.setdefault(self._ids[r])
        return list(found)

    def _embedding_sq_norms(self) -> torch.Tensor:
        """Squared norms of the stored embeddings, computed once per bank version."""
        cached = self._sq_norm_cache
        if cached is None or cached[0] != self._version:
            cached = (self._version, torch.linalg.vector_norm(self._embeddings[: self._n], dim=1).square())
            self._sq_norm_cache = cached
        return cached[1]
