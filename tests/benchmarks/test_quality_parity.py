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
    # a second sampling seed adds its own records; the summary averages the two seeds of each setting
    seeded = benchmark.main([*resume, "--models", "twin", "--seed", "1"])
    new = seeded[len(records) :]
    assert seeded[: len(records)] == records and [(r["model"], r["seed"]) for r in new] == [("twin", 1)] * 2
    summary = benchmark.seed_summary(seeded)
    assert [(row["guidance_scale"], row["seeds"]) for row in summary] == [(0.0, 2), (0.3, 2)]
    (first,) = [r for r in records if (r["model"], r["guidance_scale"]) == ("twin", 0.0)]
    assert summary[0]["fid_mean"] == pytest.approx((first["fid"] + new[0]["fid"]) / 2)
    out.write_text(json.dumps(records))
    out.write_text(json.dumps([{**records[0], "inference_steps": 50}]))
    with pytest.raises(ValueError, match="other --num-images"):
        benchmark.main(resume)
