import json
import os

import pytest

from tests.benchmarks.loading import load_benchmark


@pytest.mark.slow  # trains four tiny models, samples seven
def test_tiny_regime_writes_every_record_and_removal_equals_never_held(tmp_path):
    out, path = tmp_path / "regime", tmp_path / "regime.json"
    records, extras = load_benchmark("memorization_regime").main(["--tiny", "--out", str(out), "--json", str(path)])
    assert json.loads(path.read_text()) == records
    rows = [(r["model"], r["phase"]) for r in records]
    assert rows == [
        ("twin", "before"),
        ("spm", "before"),
        ("spm deletion", "after"),
        ("twin + SalUn", "after"),
        ("twin + gradient ascent", "after"),
        ("oracle twin", "after"),
        ("oracle spm", "after"),
    ]
    keys = {"near_copies_of_removed", "memorization_rate", "fid_remaining"}
    assert all(keys <= set(r) and isinstance(r["near_copies_of_removed"], int) for r in records)
    removed = extras["removed"]
    assert len(removed) == 5 and len(set(extras["removed_labels"])) == 5  # one per class
    assert extras["variations"]["after_equals_never_held"] is True
    assert list(extras["memory_influence"]) == list(removed)
    settings = json.loads((tmp_path / "regime_settings.json").read_text())
    assert settings["removed"] == removed
    assert sorted(os.listdir(out / "pictures")) == ["nearest_training.png"] + [f"removed_{i}.png" for i in range(5)]
    # the oracles were trained without the removed images
    oracle = json.loads((out / "oracle_spm" / "config.json").read_text())
    assert sorted(oracle["exclude_ids"]) == sorted(removed)
