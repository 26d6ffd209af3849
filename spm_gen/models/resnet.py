"""A small ResNet image encoder (He et al. 2016) with a CIFAR-style 3x3 stem, sized by config."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """Images `(N, C, H, W)` -> embeddings `(N, embed_dim)`.

    Args:
        in_channels: image channels.
        stage_channels: channels per stage; every stage after the first halves the resolution.
        blocks_per_stage: basic blocks per stage (ResNet-18: 2, 2, 2, 2 with channels 64 .. 512).
        embed_dim: output width (a linear projection of the pooled features).
    """

    def __init__(
        self, in_channels: int, stage_channels: Sequence[int], blocks_per_stage: Sequence[int], embed_dim: int
    ) -> None:
        super().__init__()
        if len(stage_channels) != len(blocks_per_stage):
            raise ValueError(
                f"stage_channels {stage_channels} and blocks_per_stage {blocks_per_stage} differ in length"
            )
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stage_channels[0], 3, 1, 1, bias=False), nn.BatchNorm2d(stage_channels[0]), nn.ReLU()
        )
        blocks, channels = [], stage_channels[0]
        for stage, (out_channels, count) in enumerate(zip(stage_channels, blocks_per_stage)):
            for i in range(count):
                blocks.append(BasicBlock(channels, out_channels, 2 if stage > 0 and i == 0 else 1))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Linear(channels, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.blocks(self.stem(images)).mean(dim=(2, 3)))
