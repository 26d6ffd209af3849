import json

import pytest

from tests.benchmarks.loading import load_benchmark


@pytest.mark.slow  # trains five tiny models, samples about twenty sets
def test_tiny_complete_forgetting_measures_every_part(tmp_path):
    out, path = tmp_path / "cf", tmp_path / "cf_cpu.json"
    args = ["--tiny", "--out", str(out), "--json", str(path), "--protocols", "baseline", "memory_only_half",
            "--part", "regime", "own_image", "data_rich", "classes"]  # fmt: skip
    records = load_benchmark("complete_forgetting").main(args)
    assert json.loads(path.read_text()) == records
    rows = [(r["protocol"], r["model"], r["phase"]) for r in records]
    for protocol in ("baseline", "memory_only_half"):  # both have an oracle (decided up front)
        expected = [("twin", "before"), ("spm", "before"), ("spm", "after"), ("spm never held R", "after"),
                    ("oracle", "after")]  # fmt: skip
        assert [(m, p) for q, m, p in rows if q == protocol] == expected
    keys = {"near_copies_of_removed", "memorization_rate", "extraction_share", "fid_remaining", "seconds"}
    assert all(keys <= set(r) for r in records)
    settings = json.loads((tmp_path / "cf_cpu_settings.json").read_text())
    memory_only = settings["protocols"]["memory_only_half"]
    assert memory_only["was_training_target"] == [False] * len(memory_only["removed"])
    assert all(p["after_equals_never_held"] for p in settings["protocols"].values())
    assert settings["salun_s"] > 0 and settings["protocols"]["baseline"]["deletion_speedup_vs_salun"] > 0
    own = json.loads((tmp_path / "cf_own_image_cpu.json").read_text())
    assert [r["protocol"] for r in own] == ["baseline", "memory_only_half"]
    assert set(own[0]) == {"protocol", "t 0-100", "t 100-300", "t 300-1000"}
    data_rich = json.loads((tmp_path / "cf_data_rich_cpu.json").read_text())
    assert [(r["model"], r["seed"]) for r in data_rich] == [("memory_only_half", 0), ("memory_only_half", 1)]
    classes = json.loads((tmp_path / "cf_classes_cpu.json").read_text())
    assert [r["phase"] for r in classes] == ["before", "after"] and classes[1]["other_classes_unchanged"] is True
