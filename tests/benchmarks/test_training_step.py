import json

import pytest
import torch

from spm_gen.training import load_config
from spm_gen.training.throughput import training_step_seconds
from tests.benchmarks.loading import load_benchmark


@pytest.mark.slow  # compiles the additive score and its backward
def test_the_compiled_score_trains_like_the_eager_one_and_compiles_a_bounded_number_of_times(tmp_path):
    out = tmp_path / "step.json"
    args = ["--config", "configs/tiny.yaml", "--batch-size", "8", "--memory", "16", "--steps", "2", "--warmup", "1"]
    rows = load_benchmark("training_step").main([*args, "--json", str(out)])
    assert [r["setting"] for r in rows] == ["twin", "additive (eager)", "additive (compiled)", "dot"]
    exactness = json.loads(out.read_text())["exactness"]
    assert exactness["loss_compiled"] == pytest.approx(exactness["loss_eager"], rel=1e-5)
    assert exactness["max_abs_gradient_difference"] <= 1e-5 * max(1.0, exactness["max_abs_gradient"])
    # batches of other label counts and group widths reuse the compiled graphs: the count stops growing
    config = load_config("configs/tiny.yaml", {"output_dir": str(tmp_path), "compile_fusion": True})
    counters = torch._dynamo.utils.counters["stats"]  # per process: other tests may have compiled before
    start = counters["unique_graphs"]
    training_step_seconds(config, torch.device("cpu"), steps=6, warmup=0)
    compiled = counters["unique_graphs"] - start
    training_step_seconds(config, torch.device("cpu"), steps=12, warmup=0)
    assert counters["unique_graphs"] - start == compiled  # 12 more steps of other batches: no new graph
