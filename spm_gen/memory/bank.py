"""MemoryBank: the images an SPM may read, with stable ids, labels, content hashes and exact deletion."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence

import numpy as np
import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from ..utils.images import to_unit_range
from ..utils.messages import preview
from ..utils.progress import progress
from . import items, storage
from . import nearest as search
from .changes import BankChange, ChangeLog
from .encoders import ImageEncoder, PixelEncoder
from .items import ItemSelection, as_embeddings, as_ids, as_labels, as_uint8_images, content_hashes
from .ranking import ranked_ids, seed_from_generator
from .receipts import RemovalReceipt
from .rows import RowStore

logger = logging.getLogger(__name__)


def _synchronized(method):
    """Runs a bank method under the bank's re-entrant lock (see `MemoryBank.locked`)."""

    @functools.wraps(method)
    def locked_method(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked_method


Ids = Sequence[str] | str | None
Labels = Sequence[int] | int | None
Selection = ItemSelection | None
Images = torch.Tensor | np.ndarray
LabelsIn = torch.Tensor | np.ndarray | Sequence[int]
IdsIn = Sequence[str | int] | None
OptionalTensor = torch.Tensor | None
Info = dict | None


class MemoryBank(ModelMixin, ConfigMixin):
    """The explicit memory of a semi-parametric model, of images of shape `image_shape` `(C, H, W)`.

    Each item has a stable string id, an integer label, the image (stored as uint8 CHW) and a content hash
    (sha256 of those bytes); optionally an embedding. `training_targets`, when known, lists the ids of the items
    a model's weights were trained to denoise (set by training; None: unknown): every other item (memory-only,
    or added after training) was never a training target, which each removal receipt records. The columns
    live in one `RowStore` (see there how removal leaves no copy behind); storage order is not meaningful:
    everything that depends on it (seeded retrieval, the order of retrieved items) is defined by the items
    alone. The bank is a diffusers component: pipelines save and load it with its own atomic
    `save_pretrained` / `from_pretrained` (safetensors + json, see `spm_gen.memory.storage`).
    """

    config_name = storage.CONFIG_NAME

    @register_to_config
    def __init__(self, image_shape: Sequence[int] = (3, 32, 32), training_targets: Sequence[str] | None = None) -> None:
        super().__init__()
        if len(image_shape) != 3 or any(int(s) <= 0 for s in image_shape):
            raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {image_shape}")
        if training_targets is not None and (
            isinstance(training_targets, str) or not all(isinstance(i, str) for i in training_targets)
        ):
            raise ValueError(f"training_targets must be a list of string ids or None, got {training_targets!r:.80}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self._lock = threading.RLock()
        self._store = RowStore(self.image_shape)
        self._receipts: list[dict] = []
        self._changes = ChangeLog()
        self._version = uuid.uuid4().hex
        self._saved: storage.SavedShards | None = None  # where the last load or save put the shards

    @classmethod
    def from_images(
        cls,
        images: Images,
        labels: LabelsIn,
        ids: IdsIn = None,
        embeddings: OptionalTensor = None,
        embedding_info: Info = None,
    ) -> MemoryBank:
        """Builds a bank from images `(N, C, H, W)` (float in [0, 1] or uint8) and their labels.

        Args:
            labels: `N` non-negative integer labels.
            ids: `N` unique string ids; default `"0", "1", ...` (positions).
            embeddings (`torch.Tensor` of shape `(N, D)`, *optional*) and `embedding_info` (json-able): for `nearest`.
        """
        images_u8 = as_uint8_images(images)
        bank = cls(image_shape=tuple(images_u8.shape[1:]))
        count = len(images_u8)
        bank._store.append(images_u8, as_labels(labels, count), as_ids(ids, count), content_hashes(images_u8))
        if embeddings is not None:
            bank.set_embeddings(embeddings, embedding_info)
        return bank

    def locked(self) -> threading.RLock:
        """The bank's re-entrant lock: every method holds it, so two threads never tear the bank (removals
        run one after the other); hold it (`with bank.locked():`) to read a consistent view over several
        calls, as a pipeline does while it decides what a call reads."""
        return self._lock

    def __getstate__(self) -> dict:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else dict(self.__dict__)
        state = dict(state)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return self._store.n

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._store

    def extra_repr(self) -> str:
        dim = None if self._store.embeddings is None else self._store.embeddings.shape[1]
        return f"items={len(self)}, image_shape={self.image_shape}, embeddings={dim}, version={self._version[:8]}"

    @property
    def device(self) -> torch.device:
        return self._store.device

    @property
    def dtype(self) -> torch.dtype:
        """uint8: what the images are stored as (a pipeline's dtype is its unet's)."""
        return torch.uint8

    @property
    def version(self) -> str:
        """Changes on every modification (a fresh random hex string), so caches keyed on it are never stale."""
        return self._version

    @property
    @_synchronized
    def ids(self) -> list[str]:
        return list(self._store.ids)

    @property
    @_synchronized
    def labels(self) -> torch.Tensor:
        """`(N,)` int64 labels, aligned with `ids`."""
        return torch.from_numpy(self._store.labels.copy())

    @property
    @_synchronized
    def hashes(self) -> list[str]:
        return list(self._store.hashes)

    @property
    @_synchronized
    def receipts(self) -> list[RemovalReceipt]:
        """Every removal this bank has seen, including those recorded in the save it was loaded from."""
        return [RemovalReceipt.from_dict(r) for r in self._receipts]

    @property
    @_synchronized
    def embeddings(self) -> torch.Tensor | None:
        """`(N, D)` float embeddings aligned with `ids`, or None when none were computed."""
        return self._store.embeddings

    @property
    def embedding_info(self) -> dict | None:
        return self._store.embedding_info

    @property
    @_synchronized
    def training_targets(self) -> set[str] | None:
        """The ids of the items the weights were trained to denoise (None: not recorded)."""
        targets = self.config.training_targets
        return None if targets is None else set(targets)

    @_synchronized
    def set_training_targets(self, ids: Sequence[str] | None) -> None:
        """Records which items the weights were trained to denoise (training does this at export)."""
        if ids is not None:
            unknown = [i for i in ids if i not in self._store]
            if unknown:
                raise ValueError(f"training_targets: ids not in the memory bank: {preview(unknown)}")
            ids = list(ids)
        self.register_to_config(training_targets=ids)

    @_synchronized
    def class_counts(self) -> dict[int, int]:
        values, counts = np.unique(self._store.labels, return_counts=True)
        return dict(zip(values.tolist(), counts.tolist()))

    @_synchronized
    def row_indices(self, ids: Sequence[str]) -> torch.Tensor:
        """Storage rows of `ids` as a LongTensor; valid only until the next modification (see `version`)."""
        return torch.from_numpy(self._store.rows_of(ids))

    @_synchronized
    def get_images(self, ids: Sequence[str] | None = None) -> torch.Tensor:
        """Images of `ids` (all items when None) as float `(N, C, H, W)` in [0, 1], on the bank's device."""
        store = self._store
        images = store.images if ids is None else store.images[self.row_indices(ids).to(store.device)]
        return to_unit_range(images)

    @_synchronized
    def get_labels(self, ids: Sequence[str]) -> torch.Tensor:
        return torch.from_numpy(self._store.labels[self._store.rows_of(ids)])

    @_synchronized
    def get_hashes(self, ids: Sequence[str]) -> list[str]:
        """Content hashes of `ids`, in that order."""
        return [self._store.hashes[r] for r in self._store.rows_of(ids).tolist()]

    @_synchronized
    def changes_since(self, version: str) -> list[BankChange] | None:
        """The modifications from `version` to now, or None when this process did not see them all."""
        return self._changes.since(version, self._version)

    @_synchronized
    def add(
        self, images: Images, labels: LabelsIn, ids: IdsIn = None, embeddings: torch.Tensor | None = None
    ) -> list[str]:
        """Adds `images` `(M, C, H, W)` (float in [0, 1] or uint8) with `M` non-negative integer `labels` (e.g.
        images no parameter was trained on); returns their ids: `ids`, or consecutive integers after every
        numeric id the bank ever held (ids are never reused). `embeddings` `(M, D)`: when the bank stores them."""
        self._refuse_partial("add items")
        store = self._store
        images_u8 = as_uint8_images(images, self.image_shape)
        labels_np = as_labels(labels, len(images_u8))
        start = items.next_numeric_id(store.ids, [i for r in self._receipts for i in r["removed_ids"]])  # never reused
        new_ids = as_ids(ids, len(images_u8), start=start)
        taken = [i for i in new_ids if i in store]
        if taken:
            raise ValueError(f"ids already in the memory bank: {preview(taken)}")
        hashes = content_hashes(images_u8)
        store.append(images_u8, labels_np, new_ids, hashes, embeddings)
        self._changed(added_ids=tuple(new_ids), added=tuple(zip(hashes, labels_np.tolist())))
        return new_ids

    @_synchronized
    def remove(
        self,
        selection: Selection = None,
        *,
        ids: Ids = None,
        labels: Labels = None,
        hashes: Ids = None,
        reason: str = "",
    ) -> RemovalReceipt:
        """Removes every item named by `selection` (or by `ids`, a label in `labels`, or a hash in `hashes`).
        The data is dropped, not masked: removed rows are overwritten and the freed tail is zeroed.

        Returns the `RemovalReceipt` (also kept in `receipts` and written to the receipts log on save). Raises
        `ValueError` when nothing is named or an id, label or hash is unknown; the bank is then unchanged.
        """
        start_time = time.perf_counter()
        store = self._store
        rows = self._store.selection_rows(ItemSelection.given(selection, ids, labels, hashes))
        removed = ([store.ids[r] for r in rows], store.labels[rows].tolist(), [store.hashes[r] for r in rows])
        targets = self.config.training_targets  # may name items of shards a removal did not load
        gone = set(removed[0])
        was_target = None if targets is None else [i in set(targets) for i in removed[0]]
        version_before = self._version
        store.drop_rows(rows)
        if targets is not None:
            self.register_to_config(training_targets=[i for i in targets if i not in gone])
        self._changed(removed=tuple(zip(removed[2], removed[1])))
        receipt = RemovalReceipt.now(
            *removed, version_before, self._version, reason, time.perf_counter() - start_time, was_target
        )
        self._receipts.append(receipt.to_dict())
        logger.debug("removed %d items from the memory bank (%d left)", len(rows), len(self))
        return receipt

    @_synchronized
    def resolve_ids(
        self, selection: Selection = None, *, ids: Ids = None, labels: Labels = None, hashes: Ids = None
    ) -> list[str]:
        """The ids `remove` would delete for these arguments (a dry run); raises exactly as `remove` does."""
        return [
            self._store.ids[r] for r in self._store.selection_rows(ItemSelection.given(selection, ids, labels, hashes))
        ]

    @_synchronized
    def set_embeddings(self, embeddings: torch.Tensor, info: dict | None = None) -> None:
        """Stores `(N, D)` embeddings aligned with `ids` and a json-able description of their encoder."""
        self._refuse_partial("set or compute embeddings")
        self._store.set_embeddings(as_embeddings(embeddings, len(self)), info)
        self._changed()

    @torch.no_grad()
    @_synchronized
    def compute_embeddings(
        self, encoder: ImageEncoder | None = None, batch_size: int = 1024, show_progress: bool = False
    ) -> None:
        """Embeds every item with `encoder` (default: `PixelEncoder()`) and stores the result."""
        encoder = encoder if encoder is not None else PixelEncoder()
        bar = (lambda it: progress(it, "embedding memory")) if show_progress else None
        self.set_embeddings(search.encode_rows(self._store, encoder, batch_size, bar), encoder.describe())

    @_synchronized
    def seeded_ids(
        self, label: int | None, k: int | None = None, generator: torch.Generator | None = None, seed: int | None = None
    ) -> list[str]:
        """The ids of the `k` items of class `label` (all items when None) that a query reads, in rank order
        (all when k is None), seeded by `seed` or one draw from `generator` (`spm_gen.memory.ranking`). A class
        with no items is an error here: what it reads instead is decided by the readout (`memory.readout`)."""
        if label is not None and (isinstance(label, bool) or not isinstance(label, int | np.integer)):
            raise ValueError(f"label must be an integer class or None, got {label!r}")
        return ranked_ids(self._store, label, k, seed if seed is not None else seed_from_generator(generator))

    @_synchronized
    def nearest(self, embeddings: torch.Tensor, k: int, label: int | None = None) -> search.NearestResult:
        """Exact k nearest stored embeddings (Euclidean) of each query `(Q, D)`, optionally among one label."""
        return search.nearest_embeddings(self._store, embeddings, k, label)

    @_synchronized
    def nearest_images(
        self, images: torch.Tensor | np.ndarray, k: int, label: int | None = None, encoder: ImageEncoder | None = None
    ) -> search.NearestResult:
        """The k stored items nearest to each image `(Q, C, H, W)` (pixel space by default; see `find_similar`)."""
        return search.nearest_images(self._store, images, k, label, encoder)

    @_synchronized
    def find_similar(
        self,
        images: torch.Tensor | np.ndarray,
        threshold: float | None = None,
        k: int | None = None,
        encoder: ImageEncoder | None = None,
    ) -> list[str]:
        """Ids of items within `threshold` of some image `(Q, C, H, W)` and/or among each image's `k` nearest,
        closest first. Distances are root-mean-square pixel differences of [0, 1] images (0: identical), or
        Euclidean distances between `encoder`'s embeddings (the stored ones when it made them)."""
        return search.find_similar(self._store, images, threshold, k, encoder)

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True, **kwargs) -> None:
        """Saves the bank into `save_directory` atomically (safetensors + json; see `spm_gen.memory.storage`).
        After a save, no file in the folder holds data of items removed before it. Extra keyword arguments
        passed by `DiffusionPipeline.save_pretrained` are accepted and ignored."""
        if not is_main_process:
            return
        directory = os.fspath(save_directory)
        with self._lock, storage.bank_lock(directory):
            moved = storage.removals_since(directory, self._saved, self._receipts)
            if moved is not None:
                self._absorb_removals(directory, moved)
            config = json.loads(self.to_json_string())
            self._saved = storage.save_bank(directory, config, self._store, self._receipts, self._version, self._saved)

    def _absorb_removals(self, directory: str, receipts: list[dict]) -> None:
        """A save into a folder another writer committed to since this bank read it (a notebook's pipeline
        saved after `spm-gen remove` ran on its folder): the removals recorded there are applied here too, so
        a removed id or image is never written again and every receipt stays in the log. Other changes made
        there (added items) are replaced by this bank's items."""
        if self._saved is not None and self._saved.unloaded:
            raise ValueError(
                f"'{directory}' was changed by another writer since this partial bank was loaded; load it again"
            )
        gone_ids = {i for r in receipts for i in r.get("removed_ids", [])}
        gone_hashes = {h for r in receipts for h in r.get("hashes", [])}
        store = self._store
        rows = np.array(
            [r for r, (i, h) in enumerate(zip(store.ids, store.hashes)) if i in gone_ids or h in gone_hashes],
            dtype=np.int64,
        )
        if len(rows):
            removed = tuple(zip([store.hashes[r] for r in rows], store.labels[rows].tolist()))
            store.drop_rows(rows)
            targets = self.config.training_targets
            if targets is not None:
                self.register_to_config(training_targets=[i for i in targets if i not in gone_ids])
            self._changed(removed=removed)
        self._receipts.extend(receipts)
        logger.warning(
            "'%s' was changed by another writer since this bank was loaded: applied its %d removal(s) here "
            "(%d item(s) dropped) before saving",
            directory,
            len(receipts),
            len(rows),
        )

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, subfolder: str | None = None, verify: bool = True, **kwargs
    ) -> MemoryBank:
        """Loads a bank saved by `save_pretrained` from a local folder (nothing is downloaded).

        `subfolder`: e.g. `"memory_bank"` inside a saved pipeline; `verify`: recompute every image's sha256 and
        compare it with the stored hash. Other keyword arguments of `DiffusionPipeline.from_pretrained` are ignored.
        """
        path = os.fspath(path)
        if subfolder:
            path = os.path.join(path, subfolder)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"No memory bank folder at '{path}' (memory banks load from local folders only)")
        return cls._from_stored(path, storage.load_bank(path, verify=verify))

    @classmethod
    def load_for_removal(cls, path: str, ids: Sequence[str] = (), labels: Sequence[int] = ()) -> MemoryBank:
        """Only the saved shards of the bank at `path` that hold `ids` or items of `labels` (read without
        re-hashing; the shards a save rewrites are verified as they are written): enough to remove those items
        and save back into `path`, which keeps the other shards as they are. Not a bank to sample from."""
        shards = storage.shards_holding(path, set(ids), {int(label) for label in labels})
        return cls._from_stored(path, storage.load_bank(path, verify=False, shards=shards))

    @classmethod
    def _from_stored(cls, path: str, stored: storage.LoadedBank) -> MemoryBank:
        init_names = set(inspect.signature(cls.__init__).parameters) - {"self"}
        bank = cls(**{k: v for k, v in stored.config.items() if k in init_names})
        if stored.store.image_shape != bank.image_shape:
            raise ValueError(
                f"Corrupted memory bank at '{path}': images are {stored.store.image_shape}, the config says "
                f"{bank.image_shape}"
            )
        bank._store, bank._receipts, bank._version = stored.store, stored.receipts, stored.version
        bank._saved = stored.saved
        return bank

    def _refuse_partial(self, what: str) -> None:
        if self._saved is not None and self._saved.unloaded:
            raise ValueError(f"this bank was loaded for a removal (part of its shards); load it whole to {what}")

    def _apply(self, fn, recurse: bool = True):
        """`.to(device)` moves the store; dtype casts never touch it (images stay uint8)."""
        self._store.to(fn(torch.empty(0, dtype=torch.uint8, device=self._store.device)).device)
        return super()._apply(fn, recurse)

    def _changed(self, added_ids: tuple = (), added: tuple = (), removed: tuple = ()) -> None:
        """A new version, and the change that led to it in the change log."""
        before, self._version = self._version, uuid.uuid4().hex
        self._changes.record(BankChange(before, self._version, added_ids, added, removed))
