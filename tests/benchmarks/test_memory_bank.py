import pytest

from tests.benchmarks.loading import load_benchmark


@pytest.mark.slow  # three fresh processes
def test_saved_bank_rows_measure_load_and_removals():
    benchmark = load_benchmark("memory_bank")
    r = benchmark.bench_saved(3000, dim=8)
    assert r["items"] == 3000 and r["data_mb"] > 0
    for step in ("load", "remove_1", "remove_1000"):
        assert r[step]["seconds"] > 0 and r[step]["peak_mb"] >= r[step]["baseline_mb"] > 0
    # one shard holds all 3,000 items: each removal rewrites it (minus the removed items) and the commit
    assert 0.9 < r["remove_1"]["written_mb"] / r["data_mb"] < 1.1
    assert r["remove_1000"]["written_mb"] < r["remove_1"]["written_mb"]
    assert set(benchmark.saved_ratios(r)) == set(benchmark.SAVED_TARGETS)
