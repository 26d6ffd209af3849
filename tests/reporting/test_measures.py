from types import SimpleNamespace

import pytest

from spm_gen.reporting.measures import REPORT_TABLE, UA, Measure, table, units
from spm_gen.reporting.memorization_regime import RegimeSettings
from spm_gen.reporting.roles import Role
from spm_gen.reporting.sampling_settings import SamplingSettings
from spm_gen.utils.validation import BadValue


def test_a_measure_declares_its_header_cell_and_unit():
    assert UA.header == "UA (%) ↑"
    assert Measure("removal_s", "removal time", "s").header == "removal time (s)"
    rows = [{"model": "a", "ua": 12.3456}, {"model": "b"}]
    text = table(rows, [Measure("model", "model"), UA])
    assert text.splitlines() == ["| model | UA (%) ↑ |", "|---|---|", "| a | 12.35 |", "| b | n/a |"]
    assert units(REPORT_TABLE) == {"ua": "%", "removal_s": "s"}


def test_a_role_is_its_name_in_json_and_folders():
    import json
    import os

    assert json.dumps({Role.SPM_AFTER: 1}) == '{"spm_after": 1}'
    assert os.path.join("samples", Role.TWIN_BEFORE) == os.path.join("samples", "twin_before")


def _pipe(memory: bool):
    return SimpleNamespace(config=SimpleNamespace(default_guidance_scale=0.3), memory_bank=object() if memory else None)


def test_sampling_settings_give_the_call_arguments():
    settings = SamplingSettings(num_inference_steps=7, memory_size=5)
    assert settings.pipeline_kwargs(_pipe(memory=False)) == {"num_inference_steps": 7, "guidance_scale": 0.3}
    assert settings.pipeline_kwargs(_pipe(memory=True)) == {
        "num_inference_steps": 7,
        "guidance_scale": 0.3,
        "memory_size": 5,
        "empty_memory": "all",
    }
    assert RegimeSettings().pipeline_kwargs(_pipe(memory=False))["guidance_scale"] == 0.0  # the driver's default


@pytest.mark.parametrize("bad", [{"num_inference_steps": 0}, {"seed": 2**63}, {"memory_size": 0}, {"batch_size": 0}])
def test_sampling_settings_name_a_bad_value(bad):
    with pytest.raises(BadValue, match=next(iter(bad))):
        RegimeSettings(**bad).check()
