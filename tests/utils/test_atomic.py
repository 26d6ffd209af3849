import os

import pytest

from spm_gen.utils.atomic import atomic_write, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(str(path), "old")

    def half_write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("partial")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        atomic_write(str(path), half_write)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]
    atomic_write_text(str(path), "new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["f.txt"]
