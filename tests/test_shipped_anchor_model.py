"""The shipped always-own anchor model (assets/memorization/content_memory/spm_anchor, not a default): deleting
R from its memory takes R's copies away, where the paper's SPM of the same regime keeps producing them."""

import json
import os
import shutil

import pytest

from spm_gen.cli import EXIT_NOT_VERIFIED, main
from spm_gen.paths import MEMORIZATION_MODELS

ANCHOR = os.path.join(MEMORIZATION_MODELS, "content_memory", "spm_anchor")


@pytest.mark.slow  # samples 64 images per affected class, twice
def test_remove_verify_finds_r_gone_from_the_anchor_model_and_kept_by_the_papers(tmp_path, capsys):
    with open(os.path.join(MEMORIZATION_MODELS, "removed.json")) as f:
        removed = list(json.load(f))
    statuses = {}
    for name, folder in (("paper", os.path.join(MEMORIZATION_MODELS, "spm")), ("anchor", ANCHOR)):
        copy = tmp_path / name
        shutil.copytree(folder, copy)
        statuses[name] = main(["remove", str(copy), "--ids", *removed, "--verify", "--require-verified"])
    said = capsys.readouterr().out
    assert statuses == {"paper": EXIT_NOT_VERIFIED, "anchor": 0}, said
    assert "verified 5 removed items: 0 reproduced" in said
