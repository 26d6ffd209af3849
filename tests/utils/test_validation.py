from dataclasses import dataclass

import pytest

from spm_gen.choices import FusionType, check_choice, choices_of
from spm_gen.utils.validation import check_values


def test_check_choice_names_the_value_and_the_choices():
    check_choice("fusion_type", "dot", FusionType)
    assert choices_of(FusionType) == ("additive", "dot")
    with pytest.raises(ValueError, match=r"fusion_type must be one of \['additive', 'dot'\], got 'none'"):
        check_choice("fusion_type", "none", FusionType)
    with pytest.raises(ValueError, match="got 3"):
        check_choice("fusion_type", 3, FusionType)


def test_check_values_names_the_first_bad_key():
    @dataclass
    class Settings:
        steps: int = -1
        lr: float = -2.0

    with pytest.raises(ValueError, match=r"bad config value steps=-1 \(a hint\)"):
        check_values(Settings(), {"steps": False, "lr": False}, {"steps": " (a hint)"})
    check_values(Settings(), {"steps": True})
