import json

import pytest

from tests.benchmarks.loading import load_benchmark

pytest.importorskip("fastapi")


@pytest.mark.slow  # starts server processes
def test_tiny_load_run_serves_without_errors_or_stale_reads_beside_a_hostile_mix_and_survives_kill_9(tmp_path):
    out = tmp_path / "load.json"
    result = load_benchmark("serve_load").main(["--tiny", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result, default=str))
    load = result["load"]
    assert load["generations"] > 0 and load["removals"] > 0
    assert load["errors"] == 0 and load["stale_reads"] == 0 and load["generations_after_a_removal"] > 0
    hostile = result["hostile"]
    assert hostile["well_behaved"]["errors"] == 0 and hostile["well_behaved"]["stale_reads"] == 0
    assert hostile["hostile"]["unexpected"] == 0, hostile["hostile"]["unexpected_examples"]
    answers = hostile["hostile"]["answers"]
    assert answers["bomb 16384^2"] and set(answers["bomb 16384^2"]) == {"413"}  # refused, never decoded
    assert "429" in answers["flood"]  # the flooding address got its share and no more
    assert all(t["health"] == 200 and not t["removed_bytes_on_disk"] for t in result["kill_9"])
    assert result["big_bank_remove"]["items"] == 2_000 - 3
