"""Fixtures of the memory tests."""

import pytest
import torch

from spm_gen import MemoryBank
from tests.conftest import make_images


@pytest.fixture
def folder(tmp_path):
    """A model folder with a memory bank of 40 items (the command reads only memory_bank/)."""
    path = tmp_path / "model"
    MemoryBank.from_images(make_images(40, seed=4), torch.arange(40) % 4).save_pretrained(path / "memory_bank")
    (path / "model_index.json").write_text("{}")
    return path
