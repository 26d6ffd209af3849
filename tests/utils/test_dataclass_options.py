import argparse
import dataclasses

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
