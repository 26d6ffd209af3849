"""Every benchmark has a --tiny mode (test size, numbers meaningless) that runs end to end and writes its json;
the benchmarks not listed here have their own tests (complete_forgetting, gpu_suite, memorization_regime,
quality_parity, serve_load)."""

import json

import pytest

from tests.benchmarks.loading import load_benchmark

WITH_OUT = {"classifier_unlearning", "memorization_scenario", "train_quality", "twin_unlearning"}


@pytest.mark.slow  # each trains, samples or compiles at test size (seconds to a minute)
@pytest.mark.parametrize(
    "name",
    [
        "classifier_unlearning",
        "memorization_scenario",
        "memory_bank",
        "quality_parity_analysis",
        "sampling",
        "train_quality",
        "training_step",
        "twin_unlearning",
    ],
)
def test_the_tiny_mode_runs_and_writes_its_json(name, tmp_path):
    path = tmp_path / f"{name}.json"
    argv = ["--tiny", "--json", str(path)] + (["--out", str(tmp_path / "run")] if name in WITH_OUT else [])
    result = load_benchmark(name).main(argv)
    assert result and path.exists()
    written = json.loads(path.read_text())
    assert written and ("machine" in written or "machine" in written.get("settings", {}) or isinstance(written, list))
