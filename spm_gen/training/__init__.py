"""Training: the typed config, the paper's memory sampling, the loss, checkpoints and the loop."""

from .config import ClassifierTrainConfig, TrainConfig, configure, load_config, parse_overrides
from .loop import train

__all__ = ["ClassifierTrainConfig", "TrainConfig", "configure", "load_config", "parse_overrides", "train"]
