import inspect

import pytest

from spm_gen.training.config import CLASSIFIER, UNET
from spm_gen.utils.source_signature import import_target, init_defaults


@pytest.mark.parametrize("target", [UNET, CLASSIFIER])
def test_the_defaults_read_from_source_are_those_python_sees(target):
    parameters = inspect.signature(import_target(target).__init__).parameters
    assert init_defaults(target) == {name: p.default for name, p in parameters.items() if name != "self"}


def test_a_class_that_is_not_there_or_a_default_that_is_no_literal_is_named(tmp_path, monkeypatch):
    import spm_gen.utils.source_signature as source_signature

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("class A:\n    def __init__(self, x: int = 2**3):\n        pass\n")
    monkeypatch.setattr(source_signature, "_PACKAGES_ROOT", str(tmp_path))
    with pytest.raises(ValueError, match="no class B with an __init__"):
        init_defaults("pkg.mod:B")
    with pytest.raises(ValueError, match="pkg.mod:A.__init__: a default is not a literal"):
        init_defaults("pkg.mod:A")
