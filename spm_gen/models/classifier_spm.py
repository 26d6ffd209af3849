"""SPMClassifier: an image classifier that reads a memory bank (the paper's SPM-C).

An encoder embeds the query and the memory items. `prototype` head (the paper's): memory embeddings are
averaged per class into prototypes and the query attends over them with scaled dot-product attention; the
attention weights are the class probabilities, so a class with no memory has probability exactly zero.
`neighbors` head: the query attends over its k nearest memory items and the weights are summed per label.
`linear` head: the parametric classifier with the same encoder (no memory), for the baselines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..choices import ClassifierHead, check_choice
from ..memory.bank import MemoryBank
from ..memory.feature_cache import MemoryFeatureCache
from ..memory.nearest import VectorSource, chunked_nearest
from ..memory.saved_folder import SavedFolder
from ..utils.images import to_model_range
from .resnet import ResNetEncoder


class SPMClassifier(ModelMixin, ConfigMixin):
    """Semi-parametric classifier.

    Args:
        in_channels / image_size: the images it takes (float in [0, 1]).
        num_classes: the label range.
        stage_channels / blocks_per_stage: the ResNet encoder (CIFAR-10 ResNet-18: (64, 128, 256, 512) and
            (2, 2, 2, 2)).
        embed_dim: embedding width.
        head: `"prototype"` (the paper's), `"neighbors"` or `"linear"` (parametric).
        num_neighbors: k of the `neighbors` head.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 16,
        num_classes: int = 10,
        stage_channels: Sequence[int] = (32, 64, 128),
        blocks_per_stage: Sequence[int] = (1, 1, 1),
        embed_dim: int = 128,
        head: ClassifierHead = "prototype",
        num_neighbors: int = 16,
        query_key_projections: bool = True,
    ) -> None:
        super().__init__()
        check_choice("head", head, ClassifierHead)
        if num_neighbors < 1:
            raise ValueError(f"num_neighbors must be positive, got {num_neighbors}")
        self.encoder = ResNetEncoder(in_channels, stage_channels, blocks_per_stage, embed_dim)
        self.linear = torch.nn.Linear(embed_dim, num_classes) if head == "linear" else None
        self.to_query = self.to_key = None
        if head != "linear" and query_key_projections:  # the official head: (W_q q) . (W_k p) / sqrt(d)
            self.to_query = torch.nn.Linear(embed_dim, embed_dim, bias=False)
            self.to_key = torch.nn.Linear(embed_dim, embed_dim, bias=False)
            for projection in (self.to_query, self.to_key):  # start as the plain scaled dot product
                torch.nn.init.eye_(projection.weight)
        self.memory_cache = MemoryFeatureCache(batch_size=256)

    @property
    def uses_memory(self) -> bool:
        return self.config.head != "linear"

    def _check_images(self, images: torch.Tensor, name: str = "images") -> None:
        expected = (self.config.in_channels, self.config.image_size, self.config.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"{name} must have shape (N, {', '.join(map(str, expected))}), got {tuple(images.shape)}")

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings `(N, embed_dim)` of images `(N, C, H, W)` in [0, 1] (also the FID feature extractor)."""
        self._check_images(images)
        return self.encoder(to_model_range(images).to(self.dtype))

    @torch.no_grad()
    def encode_memory(self, images: torch.Tensor, labels: torch.Tensor, timestep: None = None) -> torch.Tensor:
        """Embeddings of memory images `(M, C, H, W)` in [0, 1] (labels do not enter them): what
        `memory_cache` keeps per item."""
        return self.embed(images)

    def class_sums(self, bank: MemoryBank) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class embedding sums `(num_classes, D)` (float64) and counts `(num_classes,)` of `bank`'s items.

        Kept in step with the bank by `memory_cache` (`label_sums`): a removal or addition costs time
        proportional to the items it changed; another bank or new weights recompute them."""
        return self.memory_cache.label_sums(bank, self, (self.config.num_classes, self.config.embed_dim))

    def logits_from_memory(
        self, queries: torch.Tensor, memory: torch.Tensor, memory_labels: torch.Tensor
    ) -> torch.Tensor:
        """Log attention weights per class `(B, num_classes)` (-inf for classes without memory).

        `prototype`: scaled dot products (W_q q) . (W_k p) / sqrt(d) with the per-class means p. `neighbors`:
        the k nearest memory items (Euclidean) by the same attention, weights summed per label.
        """
        scale = 1 / math.sqrt(queries.shape[-1])
        num_classes = self.config.num_classes
        if self.config.head == "prototype":
            sums = torch.zeros(num_classes, memory.shape[1], dtype=memory.dtype, device=memory.device)
            sums.index_add_(0, memory_labels, memory)
            counts = torch.bincount(memory_labels, minlength=num_classes)
            return self.logits_from_prototypes(queries, sums, counts)
        k = min(self.config.num_neighbors, len(memory))
        # the memory core's exact chunked top-k (what MemoryBank.nearest runs), bounded for large memories
        _, neighbours = chunked_nearest(queries.detach().float(), VectorSource.from_tensor(memory.detach().float()), k)
        q, keys = self._project(queries, memory[neighbours])
        weights = torch.softmax((q[:, None, :] * keys).sum(-1) * scale, dim=-1)
        probs = torch.zeros(len(queries), num_classes, dtype=weights.dtype, device=weights.device)
        probs.scatter_add_(1, memory_labels[neighbours], weights)
        return torch.log(probs)

    def logits_from_prototypes(self, queries: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        present = counts > 0
        prototypes = sums / counts.clamp(min=1)[:, None].to(sums.dtype)
        q, keys = self._project(queries, prototypes.to(queries.dtype))
        logits = q @ keys.T / math.sqrt(queries.shape[-1])
        return logits.masked_fill(~present.to(logits.device)[None], -math.inf)

    def _project(self, queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(W_q q, W_k k)` with the bias-free projections (identity without them). Linear maps commute with
        the per-class mean, so a prototype's key is the mean of its items' keys and deletion stays exact."""
        if self.to_query is None:
            return queries, keys
        return self.to_query(queries), self.to_key(keys)

    def forward(
        self,
        images: torch.Tensor,
        memory_images: torch.Tensor | None = None,
        memory_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training-time logits `(B, num_classes)`: memory images are embedded in the same pass (with
        gradient), so one forward call serves distributed training."""
        queries = self.embed(images)
        if not self.uses_memory:
            return self.linear(queries)
        if memory_images is None or memory_labels is None or len(memory_images) == 0:
            raise ValueError("an SPM classifier needs memory_images and memory_labels")
        self._check_images(memory_images, "memory_images")
        return self.logits_from_memory(queries, self.embed(memory_images), memory_labels.to(images.device))

    @torch.no_grad()
    def predict(
        self, images: torch.Tensor, memory_bank: MemoryBank | None = None, batch_size: int = 512
    ) -> torch.Tensor:
        """Class probabilities `(B, num_classes)` of images `(B, C, H, W)` in [0, 1], reading `memory_bank`
        (memory embeddings are cached per item; a removal updates them in time proportional to the removal).

        Raises:
            ValueError: images of the wrong shape, a missing or empty bank, or a bank of other images.
        """
        was_training = self.training
        self.eval()
        try:
            self._check_images(images)
            if self.uses_memory:
                if memory_bank is None or len(memory_bank) == 0:
                    raise ValueError("an SPM classifier needs a non-empty memory_bank to predict")
                expected = (self.config.in_channels, self.config.image_size, self.config.image_size)
                if tuple(memory_bank.image_shape) != expected:
                    raise ValueError(
                        f"memory images have shape {memory_bank.image_shape}, the classifier takes {expected}"
                    )
            out = []
            for start in range(0, len(images), batch_size):
                queries = self.embed(images[start : start + batch_size].to(self.device))
                if not self.uses_memory:
                    logits = self.linear(queries)
                elif self.config.head == "prototype":
                    logits = self.logits_from_prototypes(queries, *self.class_sums(memory_bank))
                else:
                    memory = self.memory_cache.features(memory_bank, memory_bank.ids, self)
                    logits = self.logits_from_memory(queries, memory, memory_bank.labels.to(memory.device))
                out.append(torch.softmax(logits.float(), dim=-1))
            return torch.cat(out)
        finally:
            self.train(was_training)


def save_classifier(model: SPMClassifier, bank: MemoryBank | None, directory: str) -> None:
    """Writes a classifier folder: the model (config.json + safetensors) and its memory bank."""
    model.save_pretrained(directory)
    if bank is not None:
        SavedFolder(directory).save_bank(bank)


def load_classifier(directory: str) -> tuple[SPMClassifier, MemoryBank | None]:
    """Reads a folder written by `save_classifier`: `(model in eval mode, memory bank or None)`."""
    model = SPMClassifier.from_pretrained(directory).eval()
    folder = SavedFolder(directory)
    bank = folder.load_bank() if folder.has_bank else None
    if model.uses_memory and bank is None:
        raise ValueError(f"classifier folder '{directory}' has no {folder.bank_name}/ but its head reads memory")
    return model, bank
