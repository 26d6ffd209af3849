import os
import re
import shutil
import subprocess
import sys

import pytest

from spm_gen.training import ClassifierTrainConfig, load_config, parse_overrides
from spm_gen.training.classifier_loop import train_classifier

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # trains a classifier for a few steps, then samples 8 images with 50 DDIM steps
def test_the_readme_python_blocks_run_in_the_order_written(tmp_path):
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert len(blocks) >= 3
    shutil.copytree(os.path.join(REPO, "configs"), tmp_path / "configs")
    # what the README's training command before the classifier snippet makes (here in 2 steps)
    overrides = parse_overrides(
        ["--output_dir", str(tmp_path / "runs" / "digits_classifier"), "--max_train_steps", "2"]
    )
    train_classifier(
        load_config(str(tmp_path / "configs" / "digits_classifier.yaml"), overrides, ClassifierTrainConfig)
    )
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    script = "\n\n".join(blocks)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "my_bank" / "config.json").exists() and (tmp_path / "my_spm" / "model_index.json").exists()
