"""Embedding functions for memory items: pixels, or a local transformers vision model (CLIP, DINOv2).

An encoder maps images `(N, C, H, W)` float in [0, 1] to L2-normalised embeddings `(N, D)` and
describes itself with a json-able dict, recorded beside the embeddings it made.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageEncoder(Protocol):
    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> dict: ...


class PixelEncoder(nn.Module):
    """Pixel-space embedding: area-downsample to `size` x `size`, flatten, L2-normalise.

    Args:
        size: side length after downsampling; `None` keeps the input resolution.
    """

    def __init__(self, size: int | None = 8) -> None:
        super().__init__()
        if size is not None and size <= 0:
            raise ValueError(f"PixelEncoder size must be positive, got {size}")
        self.size = size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if self.size is not None and x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="area")
        return F.normalize(x.flatten(1), dim=1)

    def describe(self) -> dict:
        return {"type": "pixel", "size": self.size}


class TransformersImageEncoder(nn.Module):
    """Embeddings from a transformers vision model stored in a local folder (never downloaded).

    CLIP models (`CLIPModel`, `CLIPVisionModel`, `CLIPVisionModelWithProjection`) give their image
    embedding or pooled output; other models (DINOv2, ViT) give `pooler_output`. Images are resized to
    the model's `image_size` and normalised with the mean/std of `preprocessor_config.json` when present
    (ImageNet statistics otherwise).

    Args:
        path: a folder written by `save_pretrained` (config.json + safetensors weights).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = os.fspath(path)
        if not os.path.isfile(os.path.join(self.path, "config.json")):
            raise FileNotFoundError(
                f"No transformers model at '{self.path}' (config.json missing). Nothing is downloaded at run "
                "time: on a machine with internet, save the model once, e.g. `huggingface-cli download "
                f"facebook/dinov2-small --local-dir {self.path}` (or openai/clip-vit-base-patch32), "
                "then copy that folder here."
            )
        import transformers

        config = transformers.AutoConfig.from_pretrained(self.path, local_files_only=True)
        # the saved architecture keeps heads AutoModel would drop (e.g. CLIPVisionModelWithProjection)
        architecture = (getattr(config, "architectures", None) or ["AutoModel"])[0]
        model_class = getattr(transformers, architecture, transformers.AutoModel)
        self.model = model_class.from_pretrained(self.path, local_files_only=True, use_safetensors=True).eval()
        vision_config = getattr(config, "vision_config", config)
        self.image_size = int(vision_config.image_size)
        self.num_channels = int(getattr(vision_config, "num_channels", 3))
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        processor_file = os.path.join(self.path, "preprocessor_config.json")
        if os.path.isfile(processor_file):
            with open(processor_file) as f:
                processor = json.load(f)
            mean = tuple(processor.get("image_mean", mean))
            std = tuple(processor.get("image_std", std))
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.model_type = config.model_type

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.mean.device, torch.float32)
        if x.shape[1] == 1 and self.num_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        x = ((x - self.mean) / self.std).to(self.model.dtype)
        if hasattr(self.model, "get_image_features"):
            out = self.model.get_image_features(pixel_values=x)
            feats = out if isinstance(out, torch.Tensor) else out.pooler_output
        else:
            out = self.model(pixel_values=x)
            feats = getattr(out, "image_embeds", None)
            if feats is None:
                feats = out.pooler_output
        return F.normalize(feats.float(), dim=1)

    def describe(self) -> dict:
        return {"type": "transformers", "path": self.path, "model_type": self.model_type}
