"""RowStore: the one owner of a memory bank's columns (images, labels, ids, hashes, id keys, embeddings).

Every column has one row per item, rows `0 .. n-1` are live and the capacity beyond them is zero. The store
keeps the columns in step through four operations: `reserve`, `append`, `drop_rows` and `rows_of`.
`drop_rows` moves the last live rows into the holes and zeroes the freed tail, so a deletion costs time
proportional to the deleted rows and leaves no copy of their data in memory.

Every row also belongs to a shard (a group of at most `shard_capacity` items saved as one file; see
`spm_gen.memory.storage`), and the store records which shards changed since the last save, so a save
rewrites only those.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..utils.messages import check_labels_known, preview
from .items import ItemSelection, as_embeddings
from .ranking import id_keys

SHARD_MAX_ITEMS = 32_768
SHARD_MAX_BYTES = 64 * 2**20


def shard_capacity(bytes_per_item: int) -> int:
    """Items per saved shard: at most 32,768 and about 64 MiB, so that rewriting one shard of a large bank
    writes a few percent of it."""
    return max(1, min(SHARD_MAX_ITEMS, SHARD_MAX_BYTES // max(bytes_per_item, 1)))


class RowStore:
    """Aligned columns of the items of a bank.

    Args:
        image_shape: `(C, H, W)` of every image.
    """

    def __init__(self, image_shape: tuple[int, int, int]) -> None:
        self.image_shape = image_shape
        self.n = 0
        self._images = torch.zeros((0, *image_shape), dtype=torch.uint8)
        self._embeddings: torch.Tensor | None = None
        self.embedding_info: dict | None = None
        self._sq_norms: torch.Tensor | None = None
        self._labels = np.zeros(0, dtype=np.int64)
        self._keys = np.zeros(0, dtype=np.uint64)
        self.ids: list[str] = []
        self.hashes: list[str] = []
        self._row: dict[str, int] = {}
        self._shard = np.zeros(0, dtype=np.int64)
        self.changed_shards: set[int] = set()

    # ------------------------------------------------------------------ views of the live rows

    @property
    def images(self) -> torch.Tensor:
        """uint8 `(n, C, H, W)` (a view: valid until the next change)."""
        return self._images[: self.n]

    @property
    def embeddings(self) -> torch.Tensor | None:
        return None if self._embeddings is None else self._embeddings[: self.n]

    def embedding_sq_norms(self) -> torch.Tensor:
        """Squared norms of the stored embeddings, computed once after each change."""
        if self._sq_norms is None:
            self._sq_norms = torch.linalg.vector_norm(self.embeddings, dim=1).square()
        return self._sq_norms

    @property
    def labels(self) -> np.ndarray:
        """int64 `(n,)` (a view)."""
        return self._labels[: self.n]

    @property
    def keys(self) -> np.ndarray:
        """uint64 `(n,)` stable keys of the ids (the seeded ranking orders them)."""
        return self._keys[: self.n]

    @property
    def device(self) -> torch.device:
        return self._images.device

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """The rows of `ids`, in that order. Raises `ValueError` naming unknown ids."""
        missing = [i for i in ids if i not in self._row]
        if missing:
            raise ValueError(f"Unknown ids: {preview(missing)}")
        return np.fromiter((self._row[i] for i in ids), dtype=np.int64, count=len(ids))

    def rows_with_label(self, label: int) -> np.ndarray:
        return np.flatnonzero(self.labels == int(label))

    def shard_groups(self) -> list[tuple[int, np.ndarray]]:
        """`(shard, rows)` for every shard that holds items, in shard order; rows ascending."""
        shards = self._shard[: self.n]
        order = np.argsort(shards, kind="stable")
        starts = np.flatnonzero(np.diff(shards[order], prepend=-1)) if self.n else np.zeros(0, np.int64)
        return [(int(shards[order[a]]), order[a:b]) for a, b in zip(starts, [*starts[1:], self.n])]

    def mark_saved(self) -> None:
        """Every shard is now on disk as it is in memory."""
        self.changed_shards.clear()

    def _bytes_per_item(self) -> int:
        embedding = 0 if self._embeddings is None else 4 * self._embeddings.shape[1]
        return int(np.prod(self.image_shape)) + 8 + embedding

    def _assign_shards(self, start: int, count: int) -> None:
        """New rows fill the last shard up to `shard_capacity`, then open new shards; all are marked changed."""
        capacity = shard_capacity(self._bytes_per_item())
        shards = self._shard[:start]
        last = int(shards.max()) if start else 0
        room = max(capacity - int(np.count_nonzero(shards == last)), 0) if start else capacity
        assigned = np.empty(count, dtype=np.int64)
        assigned[: min(room, count)] = last
        rest = np.arange(max(count - room, 0))
        assigned[min(room, count) :] = last + 1 + rest // capacity
        self._shard[start : start + count] = assigned
        self.changed_shards.update(np.unique(assigned).tolist())

    # ------------------------------------------------------------------ changes

    def to(self, device: torch.device | str) -> None:
        self._images = self._images.to(device)
        if self._embeddings is not None:
            self._embeddings = self._embeddings.to(device)

    def reserve(self, total: int) -> None:
        """Grows every column to hold `total` rows (amortised doubling)."""
        capacity = self._images.shape[0]
        if total <= capacity:
            return
        new_capacity = max(total, 2 * capacity)

        def grow(t: torch.Tensor) -> torch.Tensor:
            out = torch.zeros((new_capacity, *t.shape[1:]), dtype=t.dtype, device=t.device)
            out[: self.n] = t[: self.n]
            return out

        self._images = grow(self._images)
        if self._embeddings is not None:
            self._embeddings = grow(self._embeddings)
        self._labels = np.concatenate([self.labels, np.zeros(new_capacity - self.n, np.int64)])
        self._keys = np.concatenate([self.keys, np.zeros(new_capacity - self.n, np.uint64)])
        self._shard = np.concatenate([self._shard[: self.n], np.zeros(new_capacity - self.n, np.int64)])

    def append(
        self,
        images: torch.Tensor,
        labels: np.ndarray,
        ids: list[str],
        hashes: list[str],
        embeddings: torch.Tensor | None = None,
        shard: int | None = None,
        keys: np.ndarray | None = None,
    ) -> None:
        """Appends rows. `embeddings` `(m, D)` is required when the store holds embeddings, and starts the
        embedding column of an empty store. `shard`: the saved shard the rows were loaded from (unchanged);
        None for new rows, which are assigned to shards and marked changed. `keys`: the ids' `id_keys` when
        already known (a saved shard stores them)."""
        if len(set(ids)) != len(ids) or any(i in self._row for i in ids):
            raise ValueError("duplicate ids")
        n, m = self.n, len(ids)
        if self._embeddings is not None:
            if embeddings is None:
                raise ValueError(f"this bank stores embeddings ({self.embedding_info}); pass embeddings= for new items")
            embeddings = as_embeddings(embeddings, m, self._embeddings.shape[1])
        elif embeddings is not None:
            if n > 0:
                raise ValueError("this bank stores no embeddings; add the images, then call compute_embeddings()")
            embeddings = as_embeddings(embeddings, m)
            self._embeddings = torch.zeros((self._images.shape[0], embeddings.shape[1]), device=self.device)
        self.reserve(n + m)
        self._images[n : n + m] = images.to(self._images.device)
        if embeddings is not None:
            self._embeddings[n : n + m] = embeddings.to(self._embeddings.device)
        self._labels[n : n + m] = labels
        self._keys[n : n + m] = id_keys(ids) if keys is None else keys
        if shard is None:
            self._assign_shards(n, m)
        else:
            self._shard[n : n + m] = shard
        self.ids.extend(ids)
        self.hashes.extend(hashes)
        self._row.update((item_id, n + i) for i, item_id in enumerate(ids))
        self.n = n + m
        self._sq_norms = None

    def set_embeddings(self, embeddings: torch.Tensor, info: dict | None) -> None:
        """Replaces the embedding column with `(n, D)` float embeddings aligned with the rows."""
        store = torch.zeros((self._images.shape[0], embeddings.shape[1]), dtype=torch.float32)
        store[: self.n] = embeddings
        self._embeddings, self.embedding_info, self._sq_norms = store.to(self._images.device), info, None
        self.changed_shards.update(np.unique(self._shard[: self.n]).tolist())

    def drop_rows(self, rows: np.ndarray) -> None:
        """Deletes `rows` (sorted, unique): the last kept rows move into holes, then the tail is zeroed."""
        n = self.n
        new_n = n - len(rows)
        holes = rows[rows < new_n]
        tail = np.arange(new_n, n)
        movers = tail[~np.isin(tail, rows)]
        for r in rows:
            del self._row[self.ids[r]]
        self.changed_shards.update(np.unique(self._shard[rows]).tolist())
        if holes.size:
            dst, src = torch.from_numpy(holes).to(self.device), torch.from_numpy(movers).to(self.device)
            self._images[dst] = self._images[src]
            if self._embeddings is not None:
                self._embeddings[dst] = self._embeddings[src]
            self._labels[holes] = self._labels[movers]
            self._keys[holes] = self._keys[movers]
            self._shard[holes] = self._shard[movers]
            for h, m in zip(holes.tolist(), movers.tolist()):
                self.ids[h] = self.ids[m]
                self.hashes[h] = self.hashes[m]
                self._row[self.ids[h]] = h
        self._images[new_n:n] = 0
        if self._embeddings is not None:
            self._embeddings[new_n:n] = 0
        self._labels[new_n:n] = 0
        self._keys[new_n:n] = 0
        self._shard[new_n:n] = 0
        del self.ids[new_n:]
        del self.hashes[new_n:]
        self.n, self._sq_norms = new_n, None

    def selection_rows(self, selection: ItemSelection) -> np.ndarray:
        """Sorted unique rows named by the selection; raises before any change when something is unknown."""
        unknown_ids = [i for i in selection.ids if i not in self]
        if unknown_ids:
            raise ValueError(f"Unknown ids: {preview(unknown_ids)}; the memory bank is unchanged")
        rows = [self.rows_of(list(selection.ids))]
        if selection.labels:
            check_labels_known(selection.labels, np.unique(self.labels).tolist())
            rows.append(np.flatnonzero(np.isin(self.labels, np.asarray(selection.labels, dtype=np.int64))))
        if selection.hashes:
            wanted = set(selection.hashes)
            hash_rows = [r for r, h in enumerate(self.hashes) if h in wanted]
            unknown_hashes = sorted(wanted - {self.hashes[r] for r in hash_rows})
            if unknown_hashes:
                raise ValueError(f"Unknown hashes: {preview(unknown_hashes)}; the memory bank is unchanged")
            rows.append(np.array(hash_rows, dtype=np.int64))
        return np.unique(np.concatenate(rows))
