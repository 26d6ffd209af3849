"""The training config: a typed dataclass read from yaml, overridable with `--key value` (`overrides.py`), echoed
as json."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

from ..choices import Dataset, MixedPrecision, SelfSupport, SupportMode, choices_of
from ..utils.dataclass_options import add_options, from_options, option
from ..utils.source_signature import import_target, init_defaults
from ..utils.validation import check_values, is_guidance_scale
from .overrides import USAGE, add_config_keys, config_overrides, parse_value, unknown_argument

if typing.TYPE_CHECKING:
    from ..models.unet_spm import SPMUNet2DModel

# the model classes, imported only to build and check a model: every other check of a config runs before torch
# and diffusers load (an error in under a second)
UNET = "spm_gen.models.unet_spm:SPMUNet2DModel"
CLASSIFIER = "spm_gen.models.classifier_spm:SPMClassifier"

TRACKER_PACKAGES = {name: name for name in ("tensorboard", "wandb", "comet_ml", "aim", "mlflow", "clearml", "dvclive")}
DATA_HINTS = {
    "dataset": f" (one of {list(choices_of(Dataset))})",
    "mixed_precision": f" (one of {list(choices_of(MixedPrecision))})",
    "data_path": " (the path does not exist)",
    "memory_only_ids_file": " (the file does not exist)",
    "self_support": f" (one of {list(choices_of(SelfSupport))})",
    "support": f" (one of {list(choices_of(SupportMode))})",
}


def tracker_installed(name: str) -> bool:
    """Whether accelerate's tracker `name` can run here (its package is installed)."""
    package = TRACKER_PACKAGES.get(name)
    return package is not None and importlib.util.find_spec(package) is not None


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file '{path}' does not exist")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file '{path}' must hold a mapping, got {type(data).__name__}")
    return data


def model_config(path: str | os.PathLike, **overrides: Any) -> dict[str, Any]:
    """The `model:` section of a config file, with overrides, checked against `SPMUNet2DModel`'s arguments."""
    section = {**read_yaml(path).get("model", {}), **overrides}
    allowed = set(init_defaults(UNET))
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ValueError(f"unknown model config keys in '{path}': {unknown} (allowed: {sorted(allowed)})")
    return section


def build_unet(path: str | os.PathLike, **overrides: Any) -> SPMUNet2DModel:
    """An untrained `SPMUNet2DModel` from the `model:` section of a config file."""
    return import_target(UNET)(**model_config(path, **overrides))


def check_model(model_class: str, model: dict[str, Any]) -> None:
    """The model's keys (read from its source), then its own checks (importing and building it)."""
    allowed = set(init_defaults(model_class))
    unknown = sorted(set(model) - allowed)
    if unknown:
        raise ValueError(f"unknown model config keys: {unknown} (allowed: {sorted(allowed)})")
    import_target(model_class)(**model)


@dataclass
class RunConfig:
    """Fields every training run has: run folder, data (with the oracle's exclusions), model arguments,
    the paper's per-batch memory sampling, and the basic optimisation settings."""

    model_class: ClassVar[str]  # "module:Class" (UNET, CLASSIFIER)
    trainer: ClassVar[str]  # "module:function" training a config of this class

    output_dir: str = "runs/run"
    dataset: Dataset = "digits"
    data_path: str | None = None
    image_size: int = 16
    channels: int = 1
    exclude_ids: list[str] = field(default_factory=list)
    exclude_classes: list[int] = field(default_factory=list)
    images_per_class: int | None = None  # train on the first N images of each class only (before exclusions)
    # model arguments of `model_class`
    model: dict[str, Any] = field(default_factory=dict)
    # the paper's memory sampling: N support images per batch, split evenly over the batch's labels,
    # the queries' own images excluded, labels randomly permuted per batch
    memory_per_batch: int = 256
    permute_labels: bool = True
    flip: bool = False  # random horizontal flips of queries and memory (the official CIFAR-10 training)
    # memory-only items: support images in training, never queries (no parameter is trained to denoise them);
    # chosen before the exclusions, so an oracle keeps the same split. Off by default (docs/forgetting.md)
    memory_only_fraction: float = 0.0  # of every class, by seeded rank of the item ids
    memory_only_seed: int = 0
    memory_only_ids_file: str | None = None  # a json list of ids
    memory_only_classes: list[int] = field(default_factory=list)  # the weights never denoise these classes
    train_batch_size: int = 64
    max_train_steps: int = 1000
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    mixed_precision: MixedPrecision = "no"
    seed: int = 0
    log_every: int = 10

    def checks(self) -> dict[str, bool]:
        """Key -> whether its value is valid; subclasses add their own."""
        return {
            "dataset": self.dataset in choices_of(Dataset),
            "data_path": self.dataset == "digits" or bool(self.data_path and os.path.exists(self.data_path)),
            "image_size": self.image_size > 0,
            "images_per_class": self.images_per_class is None or self.images_per_class > 0,
            "channels": self.channels in (1, 3),
            "memory_only_fraction": 0.0 <= self.memory_only_fraction < 1.0,
            "memory_only_ids_file": self.memory_only_ids_file is None or os.path.isfile(self.memory_only_ids_file),
            "memory_only_classes": all(c >= 0 for c in self.memory_only_classes),
            "memory_per_batch": self.memory_per_batch > 0,
            "train_batch_size": self.train_batch_size > 0,
            "max_train_steps": self.max_train_steps > 0,
            "learning_rate": self.learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "mixed_precision": self.mixed_precision in choices_of(MixedPrecision),
            "log_every": self.log_every > 0,
        }

    def hints(self) -> dict[str, str]:
        """Key -> text appended to its error message; subclasses add their own."""
        return DATA_HINTS

    def validate(self) -> None:
        """Raises ValueError naming the first bad key (before any training starts)."""
        check_values(self, self.checks(), self.hints())
        check_model(self.model_class, self.model)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


@dataclass
class TrainConfig(RunConfig):
    """A diffusion training run (defaults: a small digits SPM). See configs/digits.yaml."""

    model_class: ClassVar[str] = UNET
    trainer: ClassVar[str] = "spm_gen.training.loop:train"

    output_dir: str = "runs/digits"
    class_dropout: float = 0.1  # class-label dropout of queries for guidance
    memory_label_dropout: float = 0.1  # of memory items (the official training drops both)
    # the query's own image in its own support set (docs/forgetting.md); "never" is the paper's
    self_support: SelfSupport = "never"
    self_support_timestep: int = 100  # "below_timestep": own image in memory when t < this
    self_support_probability: float = 0.5  # "probability": own image in memory with this probability
    # "nearest": each query reads its support_neighbours nearest items of its class (pixel distance, itself
    # excluded) instead of the paper's per-batch support; the saved pipeline then reads an anchor item of the
    # class and its neighbours (memory_retrieval="anchor", memory_size=support_neighbours)
    support: SupportMode = "class"
    support_neighbours: int = 4
    # the additive score and its online softmax as torch.compile'd kernels (the same loss and gradients as eager,
    # faster: benchmarks/training_step.py); additive fusion only
    compile_fusion: bool = True
    # diffusion
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # optimisation
    lr_warmup_steps: int = 100
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    use_ema: bool = True
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    # run folder
    checkpointing_steps: int = 500
    checkpoints_total_limit: int = 2
    resume: str | None = None
    sample_every: int = 500
    num_sample_images: int = 20
    sample_inference_steps: int = 50
    guidance_scale: float = 0.0  # the saved pipeline's default_guidance_scale (also of the samples during training)
    log_with: str | None = None

    def checks(self) -> dict[str, bool]:
        return {
            **super().checks(),
            "class_dropout": 0.0 <= self.class_dropout < 1.0,
            "memory_label_dropout": 0.0 <= self.memory_label_dropout < 1.0,
            "self_support": self.self_support in choices_of(SelfSupport),
            "self_support_timestep": 0 < self.self_support_timestep <= self.num_train_timesteps,
            "self_support_probability": 0.0 < self.self_support_probability <= 1.0,
            # a query's anchor (model.anchor_pixels) is its group's first item: meaningful with nearest support only
            "support": self.support in choices_of(SupportMode)
            and (not self.model.get("anchor_pixels") or self.support == "nearest"),
            "support_neighbours": self.support_neighbours > 0,
            "num_train_timesteps": self.num_train_timesteps > 1,
            "beta_start": 0 < self.beta_start < self.beta_end,
            "beta_end": self.beta_end < 1,
            "lr_warmup_steps": self.lr_warmup_steps >= 0,
            "max_grad_norm": self.max_grad_norm > 0,
            "gradient_accumulation_steps": self.gradient_accumulation_steps > 0,
            "ema_decay": 0 < self.ema_decay < 1,
            "checkpointing_steps": self.checkpointing_steps > 0,
            "checkpoints_total_limit": self.checkpoints_total_limit > 0,
            "sample_every": self.sample_every > 0,
            "num_sample_images": self.num_sample_images > 0,
            "sample_inference_steps": self.sample_inference_steps > 0,
            "guidance_scale": is_guidance_scale(self.guidance_scale),  # saved into the pipeline, which checks it
            "log_with": self.log_with is None or tracker_installed(self.log_with),
        }

    def hints(self) -> dict[str, str]:
        hint = f" (one of {sorted(TRACKER_PACKAGES)}, with its package installed: pip install {self.log_with})"
        anchor = f" (one of {list(choices_of(SupportMode))}; model.anchor_pixels needs 'nearest')"
        return {**super().hints(), "log_with": hint, "support": anchor}


@dataclass
class ClassifierTrainConfig(RunConfig):
    """Training of an SPMClassifier (or, with `head: linear`, the parametric classifier). See
    configs/digits_classifier.yaml."""

    model_class: ClassVar[str] = CLASSIFIER
    trainer: ClassVar[str] = "spm_gen.training.classifier_loop:train_classifier"

    output_dir: str = "runs/digits_classifier"
    memory_per_batch: int = 100
    max_train_steps: int = 500
    learning_rate: float = 1e-3
    weight_decay: float = 5e-4


def run_length(steps: int) -> dict[str, int]:
    """The overrides of a run of `steps` steps that samples and checkpoints once, at its end."""
    return {"max_train_steps": steps, "sample_every": steps, "checkpointing_steps": steps}


def parse_overrides(argv: list[str], config_class: type = TrainConfig) -> dict[str, Any]:
    """`--key value [value ...]` of `config_class`'s keys as text keyed by name (checked by `load_config`).

    Raises:
        ValueError: an unknown key (named, with the closest known one), a stray value, or a key without a value.
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    add_config_keys(parser, config_class)
    try:
        parsed, rest = parser.parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise ValueError(str(e)) from None
    if rest:
        raise ValueError(unknown_argument(rest[0], config_class))
    return config_overrides(parsed)


def load_config(
    path: str | None = None, overrides: dict[str, Any] | None = None, config_class: type = TrainConfig
) -> Any:
    """Reads a yaml config (top-level fields of `config_class`, model arguments under `model:`), applies
    overrides given as text (`{"max_train_steps": "200", "fusion_type": "none", ...}`; model arguments also
    as `model.<key>`) and validates the result.

    Raises:
        ValueError: an unknown key (named), a value of the wrong type, or a bad value (named).
    """
    fields = {f.name for f in dataclasses.fields(config_class)}
    defaults = init_defaults(config_class.model_class)
    hints = typing.get_type_hints(config_class)
    data = read_yaml(path) if path else {}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"unknown config keys in '{path}': {unknown}")
    model = dict(data.pop("model", {}) or {})
    config = config_class(**data, model=model)
    for key, text in (overrides or {}).items():
        name = key.removeprefix("model.")
        if key.startswith("model.") or (key not in fields and name in defaults):
            if name not in defaults:
                raise ValueError(unknown_argument(f"--{key}", config_class))
            default = defaults[name]
            if name == "memory_resolutions" and text == ALL_LEVELS:
                model[name] = ALL_LEVELS  # resolved below, with the model's other arguments
                continue
            model[name] = parse_value(key, text, list[int] if isinstance(default, tuple) else type(default))
        elif key in fields and key != "model":
            setattr(config, key, parse_value(key, text, hints[key]))
        else:
            raise ValueError(unknown_argument(f"--{key}", config_class))
    if model.get("memory_resolutions") == ALL_LEVELS:
        model["memory_resolutions"] = level_resolutions({**defaults, **model})
    config.model = model
    config.validate()
    return config


ALL_LEVELS = "all"  # memory_resolutions: every level of the model


def level_resolutions(model: dict[str, Any]) -> list[int]:
    """The side lengths of a unet's levels (`sample_size` halved per level of `block_out_channels`)."""
    return [model["sample_size"] // 2**level for level in range(len(model["block_out_channels"]))]


def configure(path: str, overrides: dict[str, Any], config_class: type = TrainConfig, dry_run: bool = False) -> Any:
    """The validated run config of a command line (`--config PATH --key value ...`, its keys parsed by
    `add_config_keys`); with `dry_run` it is printed as json and None is returned, so that the caller trains only
    when a config comes back."""
    config = load_config(path, overrides, config_class)
    if dry_run:
        sys.stdout.write(config.to_json() + "\n")
        return None
    return config


@dataclass
class TrainOptions:
    """A training command's own options; the yaml's keys are options too (`add_config_keys`)."""

    config: str = option(help="a yaml run config, e.g. configs/digits.yaml or configs/tiny.yaml", flag="--config")
    dry_run: bool = option(False, help="print the resolved config as json and exit")


def script_main(argv: list[str] | None, description: str, config_class: type) -> int:
    """The `main()` of a training script: `--config PATH [--dry-run] [--key value ...]`, then the training of
    `config_class`, imported once the config is checked."""
    parser = argparse.ArgumentParser(description=description, usage=USAGE, allow_abbrev=False)
    add_options(parser, TrainOptions)
    add_config_keys(parser, config_class)
    args, rest = parser.parse_known_args(argv)
    if rest:
        raise ValueError(unknown_argument(rest[0], config_class))
    options = from_options(TrainOptions, args)
    config = configure(options.config, config_overrides(args), config_class, options.dry_run)
    if config is not None:
        import_target(config_class.trainer)(config)
    return 0
