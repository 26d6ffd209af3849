import json

import pytest

from scripts.train import main as train_main
from spm_gen.training import load_config, parse_overrides


def test_yaml_and_overrides():
    cfg = load_config(
        "configs/tiny.yaml",
        parse_overrides(
            [
                "--output_dir",
                "runs/x",
                "--max_train_steps",
                "200",
                "--exclude_classes",
                "3",
                "5",
                "--fusion_type",
                "none",
                "--model.memory_encoding",
                "paper",
                "--use_ema",
                "false",
                "--block_out_channels",
                "8,16",
            ]
        ),
    )
    assert cfg.output_dir == "runs/x" and cfg.max_train_steps == 200 and cfg.exclude_classes == [3, 5]
    assert cfg.model["fusion_type"] == "none" and cfg.model["memory_encoding"] == "paper"
    assert cfg.use_ema is False and cfg.model["block_out_channels"] == [8, 16]
    assert cfg.memory_per_batch == 16  # from the yaml


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["--learning_rate", "-1"], "learning_rate=-1.0"),
        (["--lr", "0.1"], "unknown config key --lr"),
        (["--max_train_steps", "many"], "bad value for --max_train_steps"),
        (["--dataset", "folder", "--data_path", "/nowhere"], "data_path='/nowhere'"),
        (["--dataset", "imagenet"], "dataset='imagenet'"),
        (["--fusion_type", "concat"], "fusion_type"),
        (["--mixed_precision", "fp8"], "mixed_precision='fp8'"),
        (["--use_ema", "maybe"], "bad value for --use_ema"),
        (["--guidance_scale", "inf"], "guidance_scale=inf"),  # the saved pipeline would refuse it after training
    ],
)
def test_bad_values_are_named(overrides, match):
    with pytest.raises(ValueError, match=match):
        load_config("configs/tiny.yaml", parse_overrides(overrides))


def test_the_command_line_forms_of_a_key():
    """argparse reads the keys, declared by the config's fields and the model's arguments: dashed spellings,
    `--model.key`, `--key=value`, several values for a list; no abbreviation of a key, no stray value."""
    parsed = parse_overrides(["--max-train-steps", "3", "--model.fusion_type=none", "--exclude_classes", "3", "5"])
    assert parsed == {"max_train_steps": "3", "model.fusion_type": "none", "exclude_classes": ["3", "5"]}
    assert load_config("configs/tiny.yaml", parsed).exclude_classes == [3, 5]
    for argv, match in (
        (["--max_train_step", "3"], r"unknown config key --max_train_step \(did you mean max_train_steps\?\)"),
        (["--max_train_steps", "3", "4"], "unexpected argument '4'"),
        (["--max_train_steps"], "--max_train_steps: expected one argument"),
        (["--head", "linear"], "unknown config key --head"),  # a classifier's key, not a diffusion run's
    ):
        with pytest.raises(ValueError, match=match):
            parse_overrides(argv)


def test_unknown_yaml_key(tmp_path):
    (tmp_path / "c.yaml").write_text("max_train_step: 3\n")
    with pytest.raises(ValueError, match=r"unknown config keys .*\['max_train_step'\]"):
        load_config(str(tmp_path / "c.yaml"))


def test_dry_run_prints_the_resolved_config(capsys):
    assert train_main(["--config", "configs/tiny.yaml", "--dry-run", "--max_train_steps", "7"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["max_train_steps"] == 7 and printed["model"]["sample_size"] == 8


def test_classifier_config(capsys):
    from scripts.train_classifier import main as classifier_main
    from spm_gen.training import ClassifierTrainConfig

    cfg = load_config(
        "configs/digits_classifier.yaml",
        parse_overrides(["--head", "linear"], ClassifierTrainConfig),
        ClassifierTrainConfig,
    )
    assert cfg.model["head"] == "linear" and cfg.memory_per_batch == 100
    with pytest.raises(ValueError, match="head must be one of"):
        load_config("configs/digits_classifier.yaml", {"head": "svm"}, ClassifierTrainConfig)
    with pytest.raises(ValueError, match="unknown config key --fusion_type"):
        parse_overrides(["--fusion_type", "dot"], ClassifierTrainConfig)
    with pytest.raises(ValueError, match="unknown config key --fusion_type"):  # given by code
        load_config("configs/digits_classifier.yaml", {"fusion_type": "dot"}, ClassifierTrainConfig)
    assert classifier_main(["--config", "configs/digits_classifier.yaml", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["head"] == "prototype"


def test_cifar10_recipe_needs_the_data_on_disk(tmp_path):
    with pytest.raises(ValueError, match="data_path='data/cifar10' \\(the path does not exist\\)"):
        load_config("configs/cifar10_ddpm.yaml")
    (tmp_path / "cifar").mkdir()
    cfg = load_config("configs/cifar10_ddpm.yaml", {"data_path": str(tmp_path / "cifar")})
    assert (
        cfg.train_batch_size == 128
        and cfg.memory_per_batch == 256
        and cfg.model["block_out_channels"] == [128, 256, 256, 256]
    )


def test_the_official_recipe_beside_the_ddpm_one(tmp_path):
    (tmp_path / "cifar").mkdir()
    overrides = {"data_path": str(tmp_path / "cifar")}
    official, ddpm = (load_config(f"configs/cifar10_{name}.yaml", overrides) for name in ("official", "ddpm"))
    assert (official.train_batch_size, official.memory_per_batch, official.learning_rate) == (256, 256, 5e-4)
    assert (official.lr_warmup_steps, official.ema_decay, official.weight_decay) == (19600, 0.9993, 0.0)
    assert official.flip and ddpm.flip and official.memory_label_dropout == 0.1
    assert official.model == ddpm.model  # the same network; only the optimisation differs


def test_a_tracker_that_is_not_installed_fails_before_training(monkeypatch):
    import spm_gen.training.config as config

    monkeypatch.setattr(config, "tracker_installed", lambda name: name == "wandb")
    with pytest.raises(ValueError, match=r"bad config value log_with='tensorboard' .*pip install tensorboard"):
        load_config("configs/tiny.yaml", {"log_with": "tensorboard"})
    assert load_config("configs/tiny.yaml", {"log_with": "wandb"}).log_with == "wandb"
    with pytest.raises(ValueError, match="log_with='nope'"):
        load_config("configs/tiny.yaml", {"log_with": "nope"})


def test_digits_configs_validate():
    assert load_config("configs/digits.yaml").images_per_class is None
    regime = load_config("configs/digits_memorization.yaml")
    assert regime.images_per_class == 10 and regime.image_size == regime.model["sample_size"] == 8


def test_python_overrides_are_typed_values_checked_like_text():
    """Code makes a variant with a dict of Python values (a protocol, a benchmark's model), not an argv list:
    each is checked against its field's type, and a model argument is found by name as from the command line."""
    config = load_config(
        "configs/tiny.yaml",
        {"max_train_steps": 7, "memory_only_fraction": 0.5, "exclude_ids": ["1", "2"], "block_out_channels": (16, 32)},
    )
    assert (config.max_train_steps, config.memory_only_fraction, config.exclude_ids) == (7, 0.5, ["1", "2"])
    assert config.model["block_out_channels"] == [16, 32]
    assert load_config("configs/tiny.yaml", {"max_train_steps": 7}) == load_config(
        "configs/tiny.yaml", parse_overrides(["--max_train_steps", "7"])
    )
    for bad in ({"max_train_steps": 0.5}, {"max_train_steps": True}, {"exclude_ids": [1]}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            load_config("configs/tiny.yaml", bad)
