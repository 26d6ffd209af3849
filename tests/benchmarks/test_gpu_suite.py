import json

import pytest

from tests.benchmarks.loading import load_benchmark


@pytest.mark.slow  # trains and samples tiny models, compiles the additive score
def test_tiny_mode_runs_every_part_of_the_suite(tmp_path):
    out = tmp_path / "suite.json"
    result = load_benchmark("gpu_suite").main(["--tiny", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rows = result["rows"]
    training = [(r["model"], r["precision"]) for r in rows if r["part"] == "training"]
    assert training == [("spm-additive", "no"), ("spm-additive", "bf16"), ("twin", "no"), ("twin", "bf16")]
    assert all(r["images_per_s"] > 0 for r in rows if r["part"] == "training")
    sampling = [
        (r["model"], r.get("memory_size"), r.get("unconditional_memory")) for r in rows if r["part"] == "sampling"
    ]
    spm = [(f"spm-{f}", m, u) for f in ("additive", "dot") for m in (4, 8) for u in ("class", "all")]
    assert sampling == [("twin", None, None), *spm]
    (agreement,) = [r for r in rows if r["part"] == "bf16_vs_fp32"]
    assert agreement["dtype"] == "torch.bfloat16" and 0 < agreement["max_abs_diff"] < 0.1
    assert rows[-1] == {"part": "host_sync", "model": "spm-additive", "syncs_in_step_loop": None}  # CUDA only
