"""MemoryBank: the images an SPM may read, with stable ids, labels, content hashes and exact deletion."""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np
import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from tqdm.auto import tqdm

from . import storage
from .encoders import ImageEncoder, PixelEncoder
from .items import as_ids, as_labels, as_uint8_images, content_hashes, preview
from .receipts import RemovalReceipt
from .retrieval import id_keys, seed_from_generator, select_rows
from .search import BankSearchMixin

logger = logging.getLogger(__name__)

EMPTY_LABEL_POLICIES = ("all", "error")


def _new_version() -> str:
    return uuid.uuid4().hex


class MemoryBank(BankSearchMixin, ModelMixin, ConfigMixin):
    """The explicit memory of a semi-parametric model.

    Each item has a stable string id, an integer label, the image (stored as uint8 CHW) and a content hash
    (sha256 of those bytes); optionally an embedding. Removal overwrites the removed rows with items from
    the end of the store and zeroes the freed tail, so it costs time proportional to the removed items and
    leaves no copy of the removed data behind. Storage order is therefore not meaningful: everything that
    depends on it (seeded selection, the order of selected items) is defined by the items alone.

    The bank is a diffusers component: `DiffusionPipeline.save_pretrained` / `from_pretrained` call its own
    atomic `save_pretrained` / `from_pretrained` (safetensors + json, see `spm_gen.memory.storage`).

    Args:
        image_shape: `(C, H, W)` of every stored image.
        empty_label_policy: what `select` does for a label with no items: `"all"` reads all items (the
            paper's test-time fallback) and `"error"` raises `ValueError`.
    """

    config_name = storage.CONFIG_NAME

    @register_to_config
    def __init__(self, image_shape: Sequence[int] = (3, 32, 32), empty_label_policy: str = "all") -> None:
        super().__init__()
        if len(image_shape) != 3 or any(int(s) <= 0 for s in image_shape):
            raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {image_shape}")
        if empty_label_policy not in EMPTY_LABEL_POLICIES:
            raise ValueError(f"empty_label_policy must be one of {EMPTY_LABEL_POLICIES}, got {empty_label_policy!r}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.register_buffer("_images", torch.zeros((0, *self.image_shape), dtype=torch.uint8), persistent=False)
        self.register_buffer("_embeddings", None, persistent=False)
        self._n = 0
        self._labels = np.zeros(0, dtype=np.int64)
        self._keys = np.zeros(0, dtype=np.uint64)
        self._ids: list[str] = []
        self._hashes: list[str] = []
        self._row: dict[str, int] = {}
        self._receipts: list[dict] = []
        self._embedding_info: dict | None = None
        self._sq_norm_cache: tuple[str, torch.Tensor] | None = None
        self._version = _new_version()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_images(
        cls,
        images: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray | Sequence[int],
        ids: Sequence[str | int] | None = None,
        embeddings: torch.Tensor | None = None,
        embedding_info: dict | None = None,
        empty_label_policy: str = "all",
    ) -> MemoryBank:
        """Builds a bank from images `(N, C, H, W)` (float in [0, 1] or uint8) and their labels.

        Args:
            images: the items' images.
            labels: `N` non-negative integer labels.
            ids: `N` unique string ids; default `"0", "1", ...` (positions).
            embeddings (`torch.Tensor` of shape `(N, D)`, *optional*): precomputed embeddings for `nearest`.
            embedding_info: a json-able description of what made `embeddings`.
            empty_label_policy: see the class docstring.
        """
        images_u8 = as_uint8_images(images)
        bank = cls(image_shape=tuple(images_u8.shape[1:]), empty_label_policy=empty_label_policy)
        count = len(images_u8)
        bank._append(images_u8, as_labels(labels, count), as_ids(ids, count), content_hashes(images_u8))
        if embeddings is not None:
            bank.set_embeddings(embeddings, embedding_info)
        return bank

    # ------------------------------------------------------------------ read access

    def __len__(self) -> int:
        return self._n

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    def extra_repr(self) -> str:
        return (
            f"items={self._n}, classes={len(self.class_counts())}, image_shape={self.image_shape}, "
            f"embeddings={None if self._embeddings is None else self._embeddings.shape[1]}, version={self._version[:8]}"
        )

    @property
    def version(self) -> str:
        """Changes on every modification (a fresh random hex string), so caches keyed on it are never stale."""
        return self._version

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    @property
    def labels(self) -> torch.Tensor:
        """`(N,)` int64 labels, aligned with `ids`."""
        return torch.from_numpy(self._labels[: self._n].copy())

    @property
    def hashes(self) -> list[str]:
        return list(self._hashes)

    @property
    def receipts(self) -> list[RemovalReceipt]:
        """Every removal this bank has seen, including those recorded in the save it was loaded from."""
        return [RemovalReceipt.from_dict(r) for r in self._receipts]

    @property
    def embeddings(self) -> torch.Tensor | None:
        """`(N, D)` float embeddings aligned with `ids`, or None when none were computed."""
        return None if self._embeddings is None else self._embeddings[: self._n]

    @property
    def embedding_info(self) -> dict | None:
        return self._embedding_info

    def class_counts(self) -> dict[int, int]:
        values, counts = np.unique(self._labels[: self._n], return_counts=True)
        return dict(zip(values.tolist(), counts.tolist()))

    def row_indices(self, ids: Sequence[str]) -> torch.Tensor:
        """Storage rows of `ids` as a LongTensor; valid only until the next modification (see `version`)."""
        missing = [i for i in ids if i not in self._row]
        if missing:
            raise ValueError(f"Unknown ids: {preview(missing)}")
        return torch.tensor([self._row[i] for i in ids], dtype=torch.long)

    def get_images(self, ids: Sequence[str] | None = None) -> torch.Tensor:
        """Images of `ids` (all items when None) as float `(N, C, H, W)` in [0, 1], on the bank's device."""
        images = self._images[: self._n] if ids is None else self._images[self.row_indices(ids).to(self._images.device)]
        return images.float() / 255.0

    def get_labels(self, ids: Sequence[str]) -> torch.Tensor:
        return torch.from_numpy(self._labels[self.row_indices(ids).numpy()])

    def get_hashes(self, ids: Sequence[str]) -> list[str]:
        """Content hashes of `ids`, in that order."""
        return [self._hashes[r] for r in self.row_indices(ids).tolist()]

    # ------------------------------------------------------------------ modification

    def add(
        self,
        images: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray | Sequence[int],
        ids: Sequence[str | int] | None = None,
        embeddings: torch.Tensor | None = None,
    ) -> list[str]:
        """Adds items (e.g. images no parameter was trained on). Returns their ids.

        Args:
            images: `(M, C, H, W)` float in [0, 1] or uint8, with this bank's `(C, H, W)`.
            labels: `M` non-negative integer labels.
            ids: `M` new unique ids; default: consecutive integers after the largest numeric id in the bank.
            embeddings (`torch.Tensor` of shape `(M, D)`): required when the bank stores embeddings.

        Raises:
            ValueError: bad images or labels, an id already in the bank, missing or misshapen embeddings.
        """
        images_u8 = as_uint8_images(images, self.image_shape)
        count = len(images_u8)
        labels_np = as_labels(labels, count)
        start = 1 + max((int(i) for i in self._ids if i.isdigit()), default=-1)
        new_ids = as_ids(ids, count, start=start)
        taken = [i for i in new_ids if i in self._row]
        if taken:
            raise ValueError(f"ids already in the memory bank: {preview(taken)}")
        if self._embeddings is not None:
            if embeddings is None:
                raise ValueError(
                    f"this bank stores embeddings ({self._embedding_info}); pass embeddings= for the new items"
                )
            embeddings = self._check_embeddings(embeddings, count)
        elif embeddings is not None and self._n > 0:
            raise ValueError("this bank stores no embeddings; add the images, then call compute_embeddings()")
        starts_store = self._embeddings is None and embeddings is not None  # an empty bank's first embeddings
        self._append(images_u8, labels_np, new_ids, content_hashes(images_u8), None if starts_store else embeddings)
        if starts_store:
            self.set_embeddings(embeddings)
        self._version = _new_version()
        return new_ids

    def remove(
        self,
        ids: Sequence[str] | str | None = None,
        labels: Sequence[int] | int | None = None,
        hashes: Sequence[str] | str | None = None,
        reason: str = "",
    ) -> RemovalReceipt:
        """Removes every item named by `ids`, having a label in `labels`, or a content hash in `hashes`.

        The data is dropped, not masked: removed rows are overwritten and the freed tail is zeroed.

        Returns:
            The `RemovalReceipt`, also kept in `receipts` and written to the receipts log on save.

        Raises:
            ValueError: nothing requested, or an unknown id, label or hash; the bank is then unchanged.
        """
        start_time = time.perf_counter()
        rows = self._resolve_rows(ids, labels, hashes)
        removed_ids = [self._ids[r] for r in rows]
        removed_labels = self._labels[rows].tolist()
        removed_hashes = [self._hashes[r] for r in rows]
        version_before = self._version
        self._drop_rows(rows)
        self._version = _new_version()
        receipt = RemovalReceipt(
            removed_ids=removed_ids,
            labels=removed_labels,
            hashes=removed_hashes,
            version_before=version_before,
            version_after=self._version,
            time_utc=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            reason=reason,
            duration_s=time.perf_counter() - start_time,
        )
        self._receipts.append(receipt.to_dict())
        logger.debug("removed %d items from the memory bank (%d left)", len(rows), self._n)
        return receipt

    def resolve_ids(
        self,
        ids: Sequence[str] | str | None = None,
        labels: Sequence[int] | int | None = None,
        hashes: Sequence[str] | str | None = None,
    ) -> list[str]:
        """The ids `remove` would delete for these arguments (a dry run); raises exactly as `remove` does."""
        return [self._ids[r] for r in self._resolve_rows(ids, labels, hashes)]

    def set_embeddings(self, embeddings: torch.Tensor, info: dict | None = None) -> None:
        """Stores `(N, D)` embeddings aligned with `ids` and a json-able description of their encoder."""
        embeddings = self._check_embeddings(embeddings, self._n, any_dim=True)
        store = torch.zeros((self._images.shape[0], embeddings.shape[1]), dtype=torch.float32)
        store[: self._n] = embeddings
        self._embeddings = store.to(self._images.device)
        self._embedding_info = info
        self._version = _new_version()

    @torch.no_grad()
    def compute_embeddings(
        self, encoder: ImageEncoder | None = None, batch_size: int = 1024, show_progress: bool = False
    ) -> None:
        """Embeds every item with `encoder` (default: `PixelEncoder()`) and stores the result."""
        encoder = encoder if encoder is not None else PixelEncoder()
        self.set_embeddings(self._encode_all(encoder, batch_size, show_progress), encoder.describe())

    # ------------------------------------------------------------------ retrieval

    def select(
        self,
        label: int,
        k: int | None = None,
        generator: torch.Generator | None = None,
        empty_label_policy: str | None = None,
    ) -> list[str]:
        """The ids of the `k` items a query of class `label` reads (all items of the class when k is None).

        The choice is seeded by one draw from `generator` and ranks items by a hash of (seed, id), so it
        depends only on the items present, never on storage order or on removed items. Ids come back in
        that rank order. When the label has no items, `empty_label_policy` (default: the bank's config)
        decides: `"all"` selects among all items, `"error"` raises `ValueError`.
        """
        if k is not None and k <= 0:
            raise ValueError(f"k must be positive or None, got {k}")
        policy = empty_label_policy or self.config.empty_label_policy
        if policy not in EMPTY_LABEL_POLICIES:
            raise ValueError(f"empty_label_policy must be one of {EMPTY_LABEL_POLICIES}, got {policy!r}")
        if self._n == 0:
            raise ValueError("the memory bank is empty")
        candidates = np.flatnonzero(self._labels[: self._n] == int(label))
        if candidates.size == 0:
            if policy == "error":
                raise ValueError(f"no memory items with label {label} (empty_label_policy='error')")
            logger.debug("no memory items with label %s; reading all items", label)
            candidates = np.arange(self._n)
        rows = select_rows(candidates, self._keys, k, seed_from_generator(generator))
        return [self._ids[r] for r in rows]

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True, **kwargs) -> None:
        """Saves the bank into `save_directory` atomically (safetensors + json; see `spm_gen.memory.storage`).

        After a save, no file in the folder holds data of items removed before it. Extra keyword arguments
        passed by `DiffusionPipeline.save_pretrained` are accepted and ignored.
        """
        if not is_main_process:
            return
        n = self._n
        tensors = {"images": self._images[:n], "labels": torch.from_numpy(self._labels[:n])}
        if self._embeddings is not None:
            tensors["embeddings"] = self._embeddings[:n]
        config = json.loads(self.to_json_string())
        storage.write_bank(
            os.fspath(save_directory),
            config,
            tensors,
            self._ids,
            self._hashes,
            self._receipts,
            self._version,
            self._embedding_info,
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        subfolder: str | None = None,
        verify: bool = True,
        **kwargs,
    ) -> MemoryBank:
        """Loads a bank saved by `save_pretrained` from a local folder (nothing is downloaded).

        Args:
            pretrained_model_name_or_path: the bank's folder, or a pipeline folder with `subfolder`.
            subfolder: e.g. `"memory_bank"` inside a saved pipeline.
            verify: recompute every image's sha256 and compare it with the stored hash.

        Other keyword arguments passed by `DiffusionPipeline.from_pretrained` are accepted and ignored.
        """
        path = os.fspath(pretrained_model_name_or_path)
        if subfolder:
            path = os.path.join(path, subfolder)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"No memory bank folder at '{path}' (memory banks load from local folders only)")
        stored = storage.read_bank(path)
        init_names = set(inspect.signature(cls.__init__).parameters) - {"self"}
        bank = cls(**{k: v for k, v in stored.config.items() if k in init_names})
        images = stored.tensors["images"]
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != bank.image_shape:
            raise ValueError(
                f"Corrupted memory bank at '{path}': images are {images.dtype} {tuple(images.shape)}, "
                f"the config says uint8 (N, {', '.join(map(str, bank.image_shape))})"
            )
        if verify:
            bad = [i for i, h, h2 in zip(stored.ids, stored.hashes, content_hashes(images)) if h != h2]
            if bad:
                raise ValueError(f"Corrupted memory bank at '{path}': content hash mismatch for ids {preview(bad)}")
        bank._append(images, stored.tensors["labels"].numpy().astype(np.int64), stored.ids, stored.hashes)
        if "embeddings" in stored.tensors:
            bank.set_embeddings(stored.tensors["embeddings"], stored.embedding_info)
        bank._receipts = stored.receipts
        bank._version = stored.version
        return bank

    # ------------------------------------------------------------------ internals

    def _check_embeddings(self, embeddings: torch.Tensor, count: int, any_dim: bool = False) -> torch.Tensor:
        if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2 or len(embeddings) != count:
            shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
            raise ValueError(f"embeddings must be a tensor of shape ({count}, D), got {shape}")
        if not any_dim and embeddings.shape[1] != self._embeddings.shape[1]:
            raise ValueError(f"embeddings must have {self._embeddings.shape[1]} dimensions, got {embeddings.shape[1]}")
        return embeddings.detach().float()

    def _encode_all(self, encoder: ImageEncoder, batch_size: int, show_progress: bool) -> torch.Tensor:
        chunks = []
        stored = self._images[: self._n]
        for start in tqdm(range(0, self._n, batch_size), desc="embedding memory", disable=not show_progress):
            chunks.append(encoder(stored[start : start + batch_size].float() / 255.0).float())
        return torch.cat(chunks) if chunks else torch.zeros(0, 0)

    def _reserve(self, total: int) -> None:
        """Grows the row stores to hold `total` rows (amortised doubling)."""
        capacity = self._images.shape[0]
        if total <= capacity:
            return
        new_capacity = max(total, 2 * capacity)

        def grow(t: torch.Tensor) -> torch.Tensor:
            out = torch.zeros((new_capacity, *t.shape[1:]), dtype=t.dtype, device=t.device)
            out[: self._n] = t[: self._n]
            return out

        self._images = grow(self._images)
        if self._embeddings is not None:
            self._embeddings = grow(self._embeddings)
        self._labels = np.concatenate([self._labels[: self._n], np.zeros(new_capacity - self._n, np.int64)])
        self._keys = np.concatenate([self._keys[: self._n], np.zeros(new_capacity - self._n, np.uint64)])

    def _append(
        self,
        images: torch.Tensor,
        labels: np.ndarray,
        ids: list[str],
        hashes: list[str],
        embeddings: torch.Tensor | None = None,
    ) -> None:
        if len(set(ids)) != len(ids) or any(i in self._row for i in ids):
            raise ValueError("duplicate ids")
        n, m = self._n, len(ids)
        self._reserve(n + m)
        self._images[n : n + m] = images.to(self._images.device)
        if embeddings is not None:
            self._embeddings[n : n + m] = embeddings.to(self._embeddings.device)
        self._labels[n : n + m] = labels
        self._keys[n : n + m] = id_keys(ids)
        self._ids.extend(ids)
        self._hashes.extend(hashes)
        self._row.update((item_id, n + i) for i, item_id in enumerate(ids))
        self._n = n + m

    def _resolve_rows(
        self,
        ids: Sequence[str] | str | None,
        labels: Sequence[int] | int | None,
        hashes: Sequence[str] | str | None,
    ) -> np.ndarray:
        """Sorted unique rows named by the request; raises before any change when something is unknown."""
        ids = [ids] if isinstance(ids, str) else list(ids or [])
        hashes = [hashes] if isinstance(hashes, str) else list(hashes or [])
        labels = [labels] if isinstance(labels, int | np.integer) else list(labels if labels is not None else [])
        if not (ids or labels or hashes):
            raise ValueError("remove() needs ids=, labels= or hashes= naming at least one item")
        rows: list[np.ndarray] = []
        unknown_ids = [i for i in ids if i not in self._row]
        if unknown_ids:
            raise ValueError(f"Unknown ids: {preview(unknown_ids)}; the memory bank is unchanged")
        rows.append(np.array([self._row[i] for i in ids], dtype=np.int64))
        if labels:
            present = self._labels[: self._n]
            unknown_labels = sorted({int(lab) for lab in labels} - set(np.unique(present).tolist()))
            if unknown_labels:
                raise ValueError(f"Unknown labels (no item has them): {unknown_labels}; the memory bank is unchanged")
            rows.append(np.flatnonzero(np.isin(present, np.asarray(labels, dtype=np.int64))))
        if hashes:
            wanted = set(hashes)
            hash_rows = [r for r, h in enumerate(self._hashes) if h in wanted]
            unknown_hashes = sorted(wanted - {self._hashes[r] for r in hash_rows})
            if unknown_hashes:
                raise ValueError(f"Unknown hashes: {preview(unknown_hashes)}; the memory bank is unchanged")
            rows.append(np.array(hash_rows, dtype=np.int64))
        return np.unique(np.concatenate(rows))

    def _drop_rows(self, rows: np.ndarray) -> None:
        """Deletes `rows` (sorted, unique): the last kept rows move into holes, then the tail is zeroed."""
        n = self._n
        new_n = n - len(rows)
        holes = rows[rows < new_n]
        tail = np.arange(new_n, n)
        movers = tail[~np.isin(tail, rows)]
        for r in rows:
            del self._row[self._ids[r]]
        if holes.size:
            dst, src = torch.from_numpy(holes), torch.from_numpy(movers)
            device = self._images.device
            self._images[dst.to(device)] = self._images[src.to(device)]
            if self._embeddings is not None:
                self._embeddings[dst.to(device)] = self._embeddings[src.to(device)]
            self._labels[holes] = self._labels[movers]
            self._keys[holes] = self._keys[movers]
            for h, m in zip(holes.tolist(), movers.tolist()):
                self._ids[h] = self._ids[m]
                self._hashes[h] = self._hashes[m]
                self._row[self._ids[h]] = h
        self._images[new_n:n] = 0
        if self._embeddings is not None:
            self._embeddings[new_n:n] = 0
        self._labels[new_n:n] = 0
        self._keys[new_n:n] = 0
        del self._ids[new_n:]
        del self._hashes[new_n:]
        self._n = new_n
