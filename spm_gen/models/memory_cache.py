"""Memory-token cache: each memory item is encoded once and its tokens reused across batches, sampling
steps and both guidance branches, until the unet's weights change.

Tokens are keyed by the item's content (sha256 of its image, and its label), so a bank modification can
never serve a removed or replaced item's tokens; when the bank's version changes, tokens of items no longer
in it are dropped from memory as well. The unet is identified by its object, device, dtype and every
parameter's storage and in-place version counter, so an optimizer step, `load_state_dict` or `.to()`
empties the cache.

Items are encoded in canonical order (by content key) in batches of exactly `batch_size` (the last one
padded), so an item's tokens do not depend on which other items are encoded with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from ..memory.bank import MemoryBank
from .unet_spm import SPMUNet2DModel
from .weights_key import weights_key


class MemoryTokenCache:
    """Caches `SPMUNet2DModel.encode_memory` outputs of memory-bank items (see module docstring).

    Args:
        batch_size: items per encoding batch.
        show_progress: show a progress bar while encoding.
    """

    def __init__(self, batch_size: int = 64, show_progress: bool = False) -> None:
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._tokens: dict[tuple[str, int], torch.Tensor] = {}
        self._unet_key: tuple | None = None
        self._bank_version: str | None = None

    def __len__(self) -> int:
        return len(self._tokens)

    def clear(self) -> None:
        self._tokens.clear()

    def tokens(
        self,
        unet: SPMUNet2DModel,
        bank: MemoryBank,
        ids: Sequence[str],
        timestep: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Tokens `(len(ids), pool**2, C)` of bank items `ids`, in that order.

        With a `timestep` (the paper's memory encoding at sampling time) tokens are encoded for that step and
        not cached.
        """
        keys = list(zip(bank.get_hashes(ids), bank.get_labels(ids).tolist()))
        if timestep is not None:
            return self._encode(unet, bank, ids, keys, timestep)
        self._refresh(unet, bank)
        missing = sorted({key: item_id for key, item_id in zip(keys, ids) if key not in self._tokens}.items())
        if missing:
            new_keys = [key for key, _ in missing]
            encoded = self._encode(unet, bank, [item_id for _, item_id in missing], new_keys, None)
            self._tokens.update(zip(new_keys, encoded))
        return torch.stack([self._tokens[key] for key in keys])

    def _refresh(self, unet: SPMUNet2DModel, bank: MemoryBank) -> None:
        key = weights_key(unet)
        if key != self._unet_key:
            self._tokens.clear()
            self._unet_key = key
        if bank.version != self._bank_version:
            present = set(zip(bank.hashes, bank.labels.tolist()))
            self._tokens = {k: v for k, v in self._tokens.items() if k in present}
            self._bank_version = bank.version

    def _encode(
        self,
        unet: SPMUNet2DModel,
        bank: MemoryBank,
        ids: Sequence[str],
        keys: Sequence[tuple[str, int]],
        timestep: torch.Tensor | int | None,
    ) -> torch.Tensor:
        """Encodes items in canonical (key) order, in padded batches of exactly `batch_size`."""
        order = sorted(range(len(ids)), key=lambda i: keys[i])
        device, dtype = unet.device, unet.dtype
        outputs: list[torch.Tensor] = []
        size = self.batch_size
        for start in tqdm(range(0, len(order), size), desc="encoding memory", disable=not self.show_progress):
            chunk = [ids[i] for i in order[start : start + size]]
            images = bank.get_images(chunk).to(device=device, dtype=dtype) * 2 - 1
            labels = torch.tensor([keys[i][1] for i in order[start : start + size]], device=device)
            pad = size - len(chunk)
            if pad:
                images = torch.cat([images, images.new_zeros((pad, *images.shape[1:]))])
                labels = torch.cat([labels, labels.new_zeros(pad)])
            outputs.append(unet.encode_memory(images, labels, timestep)[: len(chunk)])
        encoded = torch.cat(outputs)
        result = torch.empty_like(encoded)
        result[torch.tensor(order, device=encoded.device)] = encoded
        return result
