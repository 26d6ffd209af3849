"""Memory at several resolutions: decoder tokens attend to memory features of the same resolution.

The paper's SPM reads memory at one place, the bottleneck pooled to 4x4 tokens, while the decoder receives
every skip connection of the query: the weights can do all the work (benchmarks/content_memory.py measures
whether a query's own image in memory changes its noise-prediction error). Systems whose retrieved content reaches the
output inject it at several scales (retrieval-augmented diffusion, Blattmann et al. 2022: cross-attention to
neighbours at three resolutions; IC-GAN: every generator block). Here, at each resolution named in the
unet's `memory_resolutions`, the up path's feature map, every position a token (not pooled), attends over the
features of the memory items its readout assigns it, taken from the same down path at the same resolution
(detached, encoded once per bank version with clean encoding, as the bottleneck tokens). The attention is
scaled dot-product (`MemoryFusion` with `fusion_type="dot"`), so routing by class, deletion exactness and
batch independence are those of the fusion. Queries and memory features carry the same position embedding
(learned, initialised to a 2D sinusoid), so that a position can read the same place of a memory image:
attention over a set of tokens is otherwise blind to where they lie. Its output is added to the feature map
(a residual).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..memory.readout import MemoryReadout
from .fusion import FusionMemory, MemoryFusion


@dataclass(frozen=True)
class MemoryLevel:
    """Where one resolution's memory features lie in the packed memory tokens `(M, L, C)` of a unet:
    tokens `[offset, offset + side**2)`, channels `[0, channels)` (the rest is zero padding)."""

    resolution: int
    offset: int
    channels: int

    @property
    def length(self) -> int:
        return self.resolution**2

    def take(self, memory_tokens: torch.Tensor) -> torch.Tensor:
        """This level's features `(M, side**2, channels)` of packed memory tokens."""
        return memory_tokens[:, self.offset : self.offset + self.length, : self.channels]


def anchor_images(pixels: torch.Tensor, readout: MemoryReadout, side: int) -> torch.Tensor:
    """`(B, C, side, side)`: for each query of `readout` (all its rows, in query order), the pixels of the first
    item of the group it reads (`pixels`: `(M, side**2, C)` in readout order): an anchor readout's anchor, or in
    nearest-support training the query's own image where it reads it, else its nearest neighbour."""
    rows = sum(len(s.rows) for s in readout.sets)
    first = torch.empty(rows, dtype=torch.long, device=pixels.device)
    for groups in readout.sets:
        first[groups.rows] = groups.items[groups.group, 0].to(pixels.device)
    return pixels[first].transpose(1, 2).reshape(rows, pixels.shape[-1], side, side)


@dataclass(frozen=True)
class LayeredMemory:
    """The memory side of a unet with memory at several resolutions or anchor pixels, prepared once per
    readout: the bottleneck fusion's, each memory attention's by resolution, and with `anchor_pixels` each
    query's anchor image `(B, C, H, W)` in the model's range (its group's first item)."""

    bottleneck: FusionMemory
    levels: dict[int, FusionMemory]
    anchors: torch.Tensor | None = None

    @property
    def readout(self) -> MemoryReadout:
        return self.bottleneck.readout


class MemoryAttention(nn.Module):
    """One resolution's memory read: `h + W_o attend(norm(h), memory)` over the feature map's positions.

    Args:
        channels: channels of the feature map and of the memory features at this resolution.
        side: the feature map's side length.
        norm_num_groups: GroupNorm groups of the feature map (the unet's).
    """

    def __init__(self, channels: int, side: int, norm_num_groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6)
        self.memory_norm = nn.LayerNorm(channels)
        self.position = nn.Parameter(sinusoid_2d(side, channels))
        self.attention = MemoryFusion(channels, "dot")
        self.to_out = nn.Linear(channels, channels)

    def prepare(self, features: torch.Tensor, readout: MemoryReadout) -> FusionMemory:
        """Keys and values of memory features `(M, side**2, channels)` (readout order), grouped by `readout`."""
        return self.attention.prepare(self.memory_norm(features) + self.position, readout)

    def forward(self, hidden_states: torch.Tensor, memory: FusionMemory) -> torch.Tensor:
        """`hidden_states` `(B, C, H, W)` with what each position read from memory added."""
        batch, channels, height, width = hidden_states.shape
        queries = self.norm(hidden_states).flatten(2).transpose(1, 2) + self.position  # (B, H*W, C)
        read = self.to_out(self.attention(queries, memory=memory))
        return hidden_states + read.transpose(1, 2).reshape(batch, channels, height, width)


def sinusoid_2d(side: int, channels: int) -> torch.Tensor:
    """`(side**2, channels)`: row and column positions in sines and cosines of geometric frequencies (half the
    channels each; a channel count that is not a multiple of 4 leaves the last channels zero)."""
    quarter = channels // 4
    frequencies = torch.exp(-math.log(10_000.0) * torch.arange(quarter) / max(quarter, 1))
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    table = torch.zeros(side * side, channels)
    for i, coordinate in enumerate((rows.flatten(), cols.flatten())):
        angles = coordinate[:, None].float() * frequencies[None]
        table[:, 2 * i * quarter : (2 * i + 1) * quarter] = torch.sin(angles)
        table[:, (2 * i + 1) * quarter : (2 * i + 2) * quarter] = torch.cos(angles)
    return table
