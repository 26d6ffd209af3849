import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile

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


def _run(command: list[str], cwd, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # builds the wheel, installs it into a fresh venv, runs the commands and a small demo (minutes)
def test_the_built_wheel_works_outside_the_repository(tmp_path):
    """A fresh venv that reuses this environment's site-packages for the dependencies (torch stays installed
    once) and holds spm-gen from the wheel alone; the commands run from a folder outside the repository."""
    source = tmp_path / "src"
    skip = shutil.ignore_patterns(".*", "runs", "outputs", "assets", "*.egg-info", "build", "__pycache__")
    shutil.copytree(REPO, source, ignore=skip)
    build = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", "dist", str(source)],
        tmp_path,
        dict(os.environ),
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("spm_gen-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "spm_gen/models/additive_attention.cpp" in names and "spm_gen/pipelines/pipeline_spm_diffusion.py" in names
    assert not any(n.startswith(("experiments/", "benchmarks/", "tests/", "assets/")) for n in names)
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)
    site = subprocess.run(
        [str(fresh / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with open(os.path.join(site, "project_dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")  # the dependencies, not spm_gen's editable finder
    install = [sys.executable, "-m", "pip", "--python", str(fresh / "bin" / "python"), "install", "-q"]
    result = _run([*install, "--no-deps", "--no-index", str(wheel)], tmp_path, dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {"PATH": f"{fresh / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    where = _run(["python", "-c", "import spm_gen; print(spm_gen.__file__)"], outside, env)
    assert where.stdout.startswith(str(fresh)), where.stdout + where.stderr
    assert _run(["python", "-c", "import experiments"], outside, env).returncode != 0  # research drivers stay out
    for command in (["spm-gen", "--version"], ["spm-gen", "train", "--help"], ["spm-gen", "serve", "--help"]):
        result = _run(command, outside, env)
        assert result.returncode == 0, (command, result.stderr[-2000:])
    # without its models the demo says in one line where they are
    result = _run(["spm-gen", "demo", "--output", "demo"], outside, env)
    said = result.stdout + result.stderr
    assert result.returncode == 2 and "SPM_GEN_ASSETS" in said and "Traceback" not in said, said[-2000:]
    shutil.copytree(os.path.join(REPO, "assets"), outside / "assets")
    result = _run(["spm-gen", "remove", "assets/digits/spm", "--ids", "17", "--dry-run"], outside, env)
    assert result.returncode == 0 and "would remove 1 item" in result.stdout, result.stderr[-2000:]
    demo = ["spm-gen", "demo", "--output", "demo", "--num-images", "20", "--steps", "2"]
    result = _run(demo, outside, {**env, "SPM_GEN_ASSETS": str(outside / "assets")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (outside / "demo" / "report.md").is_file()
