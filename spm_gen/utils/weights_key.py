"""A cheap identity for a module's weights, for caches that must never serve results of other weights."""

from __future__ import annotations

import torch


def weights_key(module: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced, moved, cast or modified in place."""
    tensors = list(module.parameters()) + list(module.buffers())
    return (id(module), tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors))
