"""Every named choice of the library, as `Literal` aliases, and the one check that validates them.

A function that takes a choice annotates it with its alias and calls `check_choice(name, value, Alias)`,
which raises `ValueError("<name> must be one of [...], got <value>")`.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

FusionType = Literal["additive", "dot"]
"""How memory is fused into the query: the paper's additive attention, or scaled dot-product attention."""
UNetFusionType = Literal["additive", "dot", "none"]
"""A unet's fusion; `"none"` is the parametric twin (no memory)."""
MemoryEncoding = Literal["clean", "paper"]
"""Memory enters the down path at t=0 (`"clean"`, tokens cached per bank version) or at the current t."""
EmptyMemory = Literal["all", "error"]
"""A class with no memory at all reads all memory (`"all"`), or sampling raises (`"error"`)."""
MemoryRetrieval = Literal["random", "nearest", "anchor"]
"""Seeded items of the sample's class, the items nearest a reference image (image variations), or a seeded
anchor item of the class and its nearest items of the class (what nearest-support training reads)."""
UnconditionalMemory = Literal["all", "class"]
"""What guidance's unconditional branch reads: every item the batch selected, or its own class's memory."""
OutputType = Literal["pil", "np", "pt", "latent"]
ClassifierHead = Literal["prototype", "neighbors", "linear"]
TwinMethod = Literal["random_label", "gradient_ascent"]
"""Parametric unlearning of the twin: SalUn's random-label fine-tuning, or gradient ascent."""
Dataset = Literal["digits", "folder", "cifar10", "hf_disk"]
DigitsSplit = Literal["all", "train", "test"]
FeatureExtractor = Literal["domain", "inception"]
"""FID features: a trained classifier's encoder (offline default) or Inception weights from disk."""
MixedPrecision = Literal["no", "fp16", "bf16"]
SkipBypass = Literal["keep", "drop", "drop_low_noise"]
"""The query's own skip connections at the resolutions that read memory: kept, zeroed, or zeroed at low noise."""
SupportMode = Literal["class", "nearest"]
"""Training support: the paper's (items of the batch's classes, split evenly over its labels), or each query's
nearest items of its class (retrieval-augmented diffusion's neighbours)."""
SelfSupport = Literal["never", "below_timestep", "probability"]
"""When a training query's own image is in its own support set: never (the paper's), when its timestep is
below `self_support_timestep` (low noise, where memorization happens), or with `self_support_probability`."""


def choices_of(alias: Any) -> tuple[str, ...]:
    """The allowed values of a `Literal` alias."""
    return get_args(alias)


def check_choice(name: str, value: object, alias: Any) -> None:
    """Raises `ValueError` naming `name` and `value` when `value` is not one of `alias`'s values."""
    allowed = choices_of(alias)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
