"""Validation and coercion of what callers hand a memory bank: images, labels, ids; content hashes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..utils.messages import preview


def as_uint8_images(images: torch.Tensor | np.ndarray, expected_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Images `(N, C, H, W)` float in [0, 1] or uint8, as a contiguous uint8 CPU tensor.

    Raises:
        ValueError: wrong number of dimensions, a shape other than `expected_shape` (C, H, W),
            a dtype that is neither float nor uint8, or float values outside [0, 1].
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor or numpy array, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got shape {tuple(images.shape)}")
    if expected_shape is not None and tuple(images.shape[1:]) != tuple(expected_shape):
        raise ValueError(
            f"images have shape (C, H, W) = {tuple(images.shape[1:])}, this memory bank holds {tuple(expected_shape)}"
        )
    images = images.detach().cpu()
    if images.dtype == torch.uint8:
        return images.contiguous()
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1] or uint8, got dtype {images.dtype}")
    if images.numel() and (images.min() < 0 or images.max() > 1 or torch.isnan(images).any()):
        raise ValueError(
            f"float images must lie in [0, 1], got values in [{images.min().item():.4g}, {images.max().item():.4g}]"
        )
    return (images.float() * 255).round_().to(torch.uint8).contiguous()


MAX_LABEL = 2**31 - 1  # a label indexes a class embedding table; a larger one is a mistake, never a class


def as_labels(labels: torch.Tensor | np.ndarray | Sequence[int] | int, count: int) -> np.ndarray:
    """Labels as a 1-D int64 numpy array of length `count`; non-negative integers only."""
    arr = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or len(arr) != count:
        raise ValueError(f"expected {count} labels (one per image), got labels of shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"labels must be non-negative, got {sorted(set(arr[arr < 0].tolist()))}")
    too_large = arr[arr > MAX_LABEL]
    if too_large.size:
        raise ValueError(f"labels are class indices up to {MAX_LABEL:,}, got {sorted(set(too_large.tolist()))[:5]}")
    return arr.astype(np.int64)


def as_ids(ids: Sequence[str | int] | None, count: int, start: int = 0) -> list[str]:
    """Item ids as strings (ints are converted); positions `start, start+1, ...` when `ids` is None.

    Raises:
        ValueError: wrong count, a non-string id, or ids repeated within `ids`.
    """
    if ids is None:
        return [str(i) for i in range(start, start + count)]
    if isinstance(ids, str):
        ids = [ids]
    out = []
    for item_id in ids:
        if isinstance(item_id, bool) or not isinstance(item_id, str | int | np.integer):
            raise ValueError(f"ids must be strings (or ints), got {item_id!r}")
        out.append(str(item_id))
    if len(out) != count:
        raise ValueError(f"expected {count} ids (one per image), got {len(out)}")
    if len(set(out)) != len(out):
        seen: set[str] = set()
        dups = sorted({i for i in out if i in seen or seen.add(i)})
        raise ValueError(f"duplicate ids: {preview(dups)}")
    return out


def as_embeddings(embeddings: torch.Tensor, count: int, dim: int | None = None) -> torch.Tensor:
    """`(count, D)` embeddings (D = `dim` when given) as detached float32."""
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2 or len(embeddings) != count:
        shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
        raise ValueError(f"embeddings must be a tensor of shape ({count}, D), got {shape}")
    if dim is not None and embeddings.shape[1] != dim:
        raise ValueError(f"embeddings must have {dim} dimensions, got {embeddings.shape[1]}")
    embeddings = embeddings.detach().float()
    bad = nonfinite_rows(embeddings)
    if bad:  # a NaN row is never anyone's nearest item: find_similar would miss it without a word
        raise ValueError(f"embeddings must be finite; rows {preview(bad)} are not")
    return embeddings


def nonfinite_rows(rows: torch.Tensor) -> list[int]:
    """The indices of the rows of a 2-D tensor that hold NaN or inf."""
    return (~torch.isfinite(rows).all(dim=1)).nonzero().flatten().tolist()


def next_numeric_id(*id_lists: Sequence[str]) -> int:
    """One more than the largest decimal (ASCII digits) id in the lists; 0 when there is none."""
    return 1 + max((int(i) for ids in id_lists for i in ids if i.isascii() and i.isdigit()), default=-1)


def content_hashes(images: torch.Tensor) -> list[str]:
    """sha256 hex digest of each image's uint8 CHW bytes (`images`: uint8 `(N, C, H, W)`)."""
    flat = images.cpu().contiguous().numpy().reshape(len(images), int(np.prod(images.shape[1:])))
    return [hashlib.sha256(row.tobytes()).hexdigest() for row in flat]


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _strings(name: str, values: Sequence[str] | str | None) -> list[str]:
    """One string or a sequence of strings as a list; anything else is a ValueError naming it."""
    if values is None:
        return []
    values = [values] if isinstance(values, str) else values
    if not isinstance(values, Sequence | np.ndarray) or any(not isinstance(v, str) for v in values):
        raise ValueError(f"{name} must be a string or a list of strings, got {values!r}")
    return list(values)


@dataclass(frozen=True)
class ItemSelection:
    """Which items a removal names: ids, whole labels and content hashes (any combination; their union).

    Build it with `ItemSelection.of(ids=..., labels=..., hashes=...)`, which accepts single values too.
    """

    ids: tuple[str, ...] = ()
    labels: tuple[int, ...] = ()
    hashes: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        ids: Sequence[str] | str | None = None,
        labels: Sequence[int] | int | None = None,
        hashes: Sequence[str] | str | None = None,
    ) -> ItemSelection:
        ids, hashes = _strings("ids", ids), _strings("hashes", hashes)
        labels = [labels] if _is_int(labels) else labels
        if labels is not None and (isinstance(labels, str) or not isinstance(labels, Sequence | np.ndarray)):
            raise ValueError(f"labels must be integers, got {labels!r}")
        bad = [lab for lab in labels if not _is_int(lab)] if labels is not None else []
        if bad:
            raise ValueError(f"labels must be integers, got {preview(bad)}")
        return cls(tuple(ids), tuple(int(lab) for lab in labels or []), tuple(hashes))

    @classmethod
    def given(cls, selection: ItemSelection | None, ids, labels, hashes) -> ItemSelection:
        """`selection`, or one built from `ids` / `labels` / `hashes` (not both); never empty."""
        if selection is not None and (ids is not None or labels is not None or hashes is not None):
            raise ValueError("give either a selection or ids= / labels= / hashes=, not both")
        selection = selection if selection is not None else cls.of(ids, labels, hashes)
        if selection.is_empty():
            raise ValueError("remove() needs ids=, labels= or hashes= naming at least one item")
        return selection

    def is_empty(self) -> bool:
        return not (self.ids or self.labels or self.hashes)
