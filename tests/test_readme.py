import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)  # the environment the README's `source .venv/bin/activate` gives
SHIPPED = ("assets/", "configs/", "scripts/")  # paths a README command reads from the repository


def _blocks(language: str) -> list[str]:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        return re.findall(rf"```{language}\n(.*?)```", f.read(), re.S)


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


def test_every_readme_command_is_on_the_activated_path_and_reads_files_that_exist():
    commands = [c for block in _blocks("bash") for c in _commands(block)]
    assert len(commands) >= 15
    for command in commands:
        program = command[0]
        assert shutil.which(program, path=VENV_BIN + os.pathsep + os.environ.get("PATH", "")), command
        for word in command[1:]:
            path = word.split("=", 1)[-1]
            if path.startswith(SHIPPED):
                assert os.path.exists(os.path.join(REPO, path)), f"{' '.join(command)}: {path} does not exist"


@pytest.mark.slow  # two removals on copies of the shipped SPM (seconds each)
def test_the_removal_block_runs_as_written_in_a_fresh_shell(tmp_path):
    """Through `bash` with no profile, after the README's `source .venv/bin/activate`, in a folder holding
    copies of the shipped models: what a user who follows the README types."""
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


@pytest.mark.slow  # samples 8 images with 50 DDIM steps
def test_the_readme_python_blocks_run_in_the_order_written(tmp_path):
    blocks = _blocks("python")
    assert len(blocks) >= 3
    shutil.copytree(os.path.join(REPO, "configs"), tmp_path / "configs")
    shutil.copytree(os.path.join(REPO, "assets", "digits", "judge"), tmp_path / "assets" / "digits" / "judge")
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    script = "\n\n".join(blocks)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["assets", "configs", "runs"]  # the snippets write under runs/ only
    assert (tmp_path / "runs" / "my_bank" / "config.json").exists()
    assert (tmp_path / "runs" / "my_spm" / "model_index.json").exists()
