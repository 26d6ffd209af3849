import json
import shutil

import pytest

from tests.benchmarks.loading import load_benchmark


@pytest.mark.slow  # trains three tiny models
def test_tiny_mode_writes_one_record_per_model_and_setting(tmp_path):
    out = tmp_path / "parity.json"
    records = load_benchmark("quality_parity").main(["--tiny", "--out", str(tmp_path / "run"), "--json", str(out)])
    assert json.loads(out.read_text()) == records
    settings = [(r["model"], r["guidance_scale"], r["memory_size"]) for r in records]
    spm = [(m, w, s) for m in ("spm_additive", "spm_dot") for w in (0.0, 0.3) for s in (4, None)]
    assert settings == spm + [("twin", 0.0, None), ("twin", 0.3, None)]
    assert all(r["num_images"] == 20 and r["fid"] >= 0 for r in records)
    settings_file = json.loads((tmp_path / "parity_settings.json").read_text())
    assert settings_file["tiny"] and "core" in settings_file["machine"]

    # --resume keeps what the json holds: nothing is sampled again
    shutil.rmtree(tmp_path / "run" / "samples")
    benchmark = load_benchmark("quality_parity")
    run = str(tmp_path / "run")
    resume = ["--tiny", "--reuse", run, "--out", run, "--json", str(out), "--resume"]
    again = benchmark.main(resume)
    assert again == records and not (tmp_path / "run" / "samples").exists()
    out.write_text(json.dumps([{**records[0], "inference_steps": 50}]))
    with pytest.raises(ValueError, match="other --num-images"):
        benchmark.main(resume)
