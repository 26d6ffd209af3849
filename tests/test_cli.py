import json

import pytest

from spm_gen import MemoryBank
from spm_gen.cli import main


def test_demo_builds_removes_saves_and_reloads(tmp_path, caplog):
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out)]) == 0
    summary = json.load(open(out / "summary.json"))
    assert summary["items_before"] == 1797
    assert summary["items_after"] == 1797 - summary["removed_class_items"] - 5
    assert summary["class_still_in_memory"] is False and summary["removed_ids_still_in_memory"] == []
    bank = MemoryBank.from_pretrained(out / "memory_bank")
    assert 3 not in bank.class_counts() and len(bank.receipts) == 2
    assert (out / "before_after.png").stat().st_size > 1000
    assert json.load(open(out / "receipts.json"))[0]["reason"] == "demo: forget class 3"


def test_unknown_command_fails():
    with pytest.raises(SystemExit):
        main(["nope"])
