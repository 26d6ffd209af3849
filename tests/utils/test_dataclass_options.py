import argparse
import dataclasses

import pytest

from spm_gen.cli import build_parser
from spm_gen.reporting.config import ReportConfig
from spm_gen.unlearning.twin import TwinUnlearning
from spm_gen.utils.dataclass_options import add_options, from_options


def test_the_report_command_declares_nothing_its_settings_do_not():
    parser = argparse.ArgumentParser()
    add_options(parser, ReportConfig)
    argv = ["spm", "--remove-class", "3", "--remove-class", "5", "--steps", "20", "--twin-method", "gradient_ascent"]
    args = parser.parse_args([*argv, "--compile-fusion", "--memory-size", "8"])
    config = from_options(ReportConfig, args)
    expected = ReportConfig(
        "spm",
        remove_classes=[3, 5],
        num_inference_steps=20,
        memory_size=8,
        compile_fusion=True,
        twin=TwinUnlearning(method="gradient_ascent"),
    )
    assert config == expected
    assert from_options(ReportConfig, parser.parse_args(["spm"])) == ReportConfig("spm")  # the defaults are the fields'


def test_every_report_setting_is_an_option_of_spm_gen_report_with_its_default_in_the_help(capsys):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    report = sub.choices["report"]
    dests = {action.dest for action in report._actions}
    fields = {f.name for f in dataclasses.fields(ReportConfig)} - {"twin"}
    assert fields | {f"twin_{f.name}" for f in dataclasses.fields(TwinUnlearning)} <= dests
    text = report.format_help()
    assert "(default: 500)" in text and "(default: 0.0001)" in text and "{all,error}" in text


def test_one_of_group_and_required_option():
    """`remove` takes exactly one selection; `--config` of a training command is required; both refusals name
    the options."""
    from spm_gen.cli_options import RemoveOptions
    from spm_gen.training.config import TrainOptions

    class Refusing(argparse.ArgumentParser):
        def error(self, message):
            raise ValueError(message)

    parser = Refusing()
    add_options(parser, RemoveOptions)
    parsed = from_options(RemoveOptions, parser.parse_args(["f", "--class", "3"]))
    assert parsed.label == 3 and parsed.ids is None and parsed.folder == "f"
    with pytest.raises(ValueError, match="one of the arguments --ids --ids-file --class"):
        parser.parse_args(["f"])
    with pytest.raises(ValueError, match="--class: not allowed with argument --ids"):
        parser.parse_args(["f", "--ids", "1", "--class", "2"])
    train = Refusing()
    add_options(train, TrainOptions)
    with pytest.raises(ValueError, match="required: --config"):
        train.parse_args([])
    assert from_options(TrainOptions, train.parse_args(["--config", "c.yaml"])) == TrainOptions("c.yaml")


def test_benchmark_options_are_parsed_checked_and_made_tiny_by_replace(capsys):
    """A benchmark's options are one dataclass: its nested settings keep their flags, --tiny replaces values
    (nested ones too) with dataclasses.replace, a bad value names its flag, the json records flat fields."""
    from spm_gen.reporting.memorization_regime import RegimeSettings
    from spm_gen.utils.benchmarking import BenchmarkOptions, parse_options, recorded_settings
    from spm_gen.utils.dataclass_options import nested_settings, option

    @dataclasses.dataclass
    class Options(BenchmarkOptions):
        steps: int | None = option(None, help="training steps")
        settings: RegimeSettings = nested_settings(RegimeSettings)

    tiny = {"steps": 4, "per_class": 2}
    options = parse_options(Options, ["--inference-steps", "7", "--tiny"], "doc", tiny)
    assert options.steps == 4 and options.settings == RegimeSettings(per_class=2, num_inference_steps=7)
    assert parse_options(Options, [], "doc", tiny).settings == RegimeSettings()
    recorded = recorded_settings(options)
    assert recorded["num_inference_steps"] == 7 and recorded["steps"] == 4 and "settings" not in recorded
    with pytest.raises(SystemExit):
        parse_options(Options, ["--inference-steps", "0"], "doc", tiny)
    assert "bad value --inference-steps=0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no option"):
        parse_options(Options, ["--tiny"], "doc", {"per_klass": 2})
