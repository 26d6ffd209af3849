"""The README and the manual (docs/): their commands exist, their links resolve, their code runs as written."""

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)  # the environment the README's `source .venv/bin/activate` gives
SHIPPED = ("assets/", "configs/", "scripts/")  # paths a command reads from the repository
PAGES = ["README.md", *sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))]


def _text(page: str) -> str:
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
        return f.read()


def _blocks(language: str, page: str | None = None) -> list[str]:
    pages = PAGES if page is None else [page]
    return [b for p in pages for b in re.findall(rf"```{language}\n(.*?)```", _text(p), re.S)]


def _commands(block: str) -> list[list[str]]:
    """The simple commands of a bash block (continuation lines joined, comments dropped), as shell words."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        current: list[str] | None = []
        for word in shlex.split(line, comments=True) + ["&&"]:
            if word in ("&&", "|", ";", "||", ">"):
                if current:
                    commands.append(current)
                current = [] if word != ">" else None  # a redirection's target is no command
            elif current is not None:
                current.append(word)
    return commands


def test_the_readme_is_a_front_page_and_every_task_has_a_page():
    readme = _text("README.md")
    assert len(readme.splitlines()) <= 250
    for section in ("## Install", "## Quick start", "## License", "## Citation"):
        assert section in readme
    for page in ("memory_bank", "generating", "removing", "serving", "training", "classifier", "measuring"):
        assert os.path.isfile(os.path.join(REPO, "docs", f"{page}.md")), page
    for page in ("reliability", "troubleshooting", "forgetting", "index"):
        assert os.path.isfile(os.path.join(REPO, "docs", f"{page}.md")), page
    assert not re.search(r"\b[0-9a-f]{7}\b(?=[ ,;)])", readme), "a commit hash in the README"
    assert not re.search(r"20\d\d-\d\d-\d\d", readme), "a date in the README"


def test_every_relative_link_resolves():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _text(page)):
            if "://" in target:
                continue
            path = os.path.normpath(os.path.join(REPO, os.path.dirname(page), target))
            assert os.path.exists(path), f"{page}: {target}"


def test_every_command_is_on_the_activated_path_and_reads_files_that_exist():
    commands = [c for block in _blocks("bash") for c in _commands(block)]
    assert len(commands) >= 15
    builtins = {"source", "cd", "export"}  # shell builtins: no program to find
    for command in commands:
        program = command[0]
        if program in builtins:
            continue
        assert shutil.which(program, path=VENV_BIN + os.pathsep + os.environ.get("PATH", "")), command
        for word in command[1:]:
            path = word.split("=", 1)[-1]
            if path.startswith(SHIPPED):
                assert os.path.exists(os.path.join(REPO, path)), f"{' '.join(command)}: {path} does not exist"


@pytest.mark.slow  # two removals on copies of the shipped SPM (seconds each)
def test_the_removal_block_runs_as_written_in_a_fresh_shell(tmp_path):
    """Through `bash` with no profile, after the README's `source .venv/bin/activate`, in a folder holding
    copies of the shipped models: what a user who follows the manual types."""
    block = next(b for b in _blocks("bash") if b.startswith("spm-gen remove assets/digits/spm --ids 17 42"))
    shutil.copytree(os.path.join(REPO, "assets", "digits", "spm"), tmp_path / "assets" / "digits" / "spm")
    activate = os.path.join(VENV_BIN, "activate")
    if not os.path.isfile(activate):
        pytest.skip(f"the tests run outside a virtual environment ({sys.executable})")
    env = {"HOME": os.environ.get("HOME", str(tmp_path)), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    script = f"set -e\nsource {shlex.quote(activate)}\n{block}"
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "removed 2 items" in result.stdout and "dry run: would remove 146 items" in result.stdout
    assert (tmp_path / "runs" / "spm_minus_17_42" / "model_index.json").exists()


WRITES = {  # what each page's Python blocks leave under runs/
    "README.md": "spm_without_3/model_index.json",
    "docs/memory_bank.md": "my_bank/config.json",
    "docs/generating.md": "my_spm/model_index.json",
    "docs/classifier.md": None,
    "docs/development.md": None,
}


@pytest.mark.slow  # loads and samples the shipped SPM, builds an untrained one
@pytest.mark.parametrize("page", sorted(p for p in PAGES if _blocks("python", p)))
def test_a_pages_python_blocks_run_in_the_order_written(tmp_path, page):
    assert page in WRITES, f"{page} has Python blocks: say in WRITES what they leave"
    shutil.copytree(os.path.join(REPO, "configs"), tmp_path / "configs")
    for model in ("spm", "judge"):
        shutil.copytree(os.path.join(REPO, "assets", "digits", model), tmp_path / "assets" / "digits" / model)
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    script = "\n\n".join(_blocks("python", page))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(os.listdir(tmp_path)) <= {"assets", "configs", "runs"}  # the snippets write under runs/ only
    if WRITES[page]:
        assert (tmp_path / "runs" / WRITES[page]).exists()
