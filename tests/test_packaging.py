import os

import pytest

from spm_gen.paths import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def test_the_wheel_lists_every_package_and_has_no_generic_top_level_name():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    on_disk = {
        os.path.relpath(root, REPO).replace(os.sep, ".")
        for root, _, files in os.walk(os.path.join(REPO, "spm_gen"))
        if "__init__.py" in files
    }
    assert set(setuptools["packages"]) == on_disk | {"spm_gen.pipelines"}
    assert all(name.split(".")[0] == "spm_gen" for name in setuptools["packages"])
    assert setuptools["package-dir"] == {"spm_gen.pipelines": "pipelines"}
    package = os.path.join(REPO, "spm_gen")
    sources = {os.path.relpath(root, REPO) for root, _, files in os.walk(package) for f in files if f.endswith(".cpp")}
    assert sources == {os.path.join("spm_gen", "models")}  # what package-data ships
    assert setuptools["package-data"] == {"spm_gen.models": ["*.cpp"]}


def test_the_pipeline_imports_under_the_projects_own_name():
    from spm_gen.pipelines import SPMDiffusionPipeline as Same

    from spm_gen import SPMDiffusionPipeline

    assert SPMDiffusionPipeline is Same and SPMDiffusionPipeline.__module__.startswith("spm_gen.pipelines.")
