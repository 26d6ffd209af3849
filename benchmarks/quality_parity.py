"""Quality parity: does the SPM generate as well as its parametric twin? (issue: paper fidelity)

Trains (or reuses) the SPM with additive fusion, the SPM with dot fusion and the twin on the digits with the
same budget, samples each at several guidance scales w and memory sizes, and measures

- domain FID on all classes against the training images (features of the judge classifier, as the report);
- class consistency: the share of samples the judge classifies as the class they were generated for;
- seconds of sampling.

    python benchmarks/quality_parity.py                      # 4,000 steps per model, 2,000 samples per setting
    python benchmarks/quality_parity.py --reuse runs/parity  # models already trained there (<name>/pipeline)
    python benchmarks/quality_parity.py --tiny               # the same code paths at test size, in seconds
    python benchmarks/quality_parity.py --reuse runs/parity --resume  # go on where an interrupted run stopped
    python benchmarks/quality_parity.py --reuse runs/parity --seed 1 --resume  # another draw of the sampling noise

Writes `--json` (default benchmarks/quality_parity_cpu.json): a list of records
`{"model", "guidance_scale", "memory_size", "fid", "class_consistency", "seconds", ...}`, "twin" in the
twin's model name, rewritten after every setting. On a shared 2-core machine, run it with OMP_NUM_THREADS=1
(see RESULTS.md); several processes with disjoint `--models` / `--guidance-scales` and their own `--json` split
the grid (concatenate their lists).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import torch

from spm_gen import SPMClassifier
from spm_gen.data import load_digits_dataset
from spm_gen.metrics.fid import compute_fid, save_images
from spm_gen.models.classifier_spm import load_classifier, save_classifier
from spm_gen.reporting.comparison import SamplingPlan
from spm_gen.reporting.sampling_settings import SamplingSettings
from spm_gen.sampling import load_pipeline
from spm_gen.training import load_config, train
from spm_gen.training.config import run_length
from spm_gen.utils.benchmarking import RunFolderOptions, describe_machine, parse_options, write_json
from spm_gen.utils.dataclass_options import option
from spm_gen.utils.images import to_unit_range

MODELS = {
    "spm_additive": {"fusion_type": "additive"},
    "spm_dot": {"fusion_type": "dot"},
    "twin": {"fusion_type": "none"},
}


@dataclass
class Options(RunFolderOptions):
    json: str | None = option("benchmarks/quality_parity_cpu.json", help="write the numbers and settings here")
    config: str = option("configs/digits.yaml", help="the training config of the models")
    train_steps: int = option(4000, help="training steps of each model")
    reuse: str | None = option(None, help="a folder with <model>/pipeline already trained (skips training)")
    models: list[str] = option(help="models", choices=list(MODELS), default_factory=lambda: list(MODELS))
    num_images: int = option(2000, help="samples per setting (classes cycling)")
    guidance_scales: list[float] = option(help="guidance scales", default_factory=lambda: [0.0, 0.3, 1.0, 2.0])
    memory_sizes: list[str] = option(help="items read per class", default_factory=lambda: ["64", "none"])
    inference_steps: int = option(50, help="DDIM steps")
    judge: str = option("assets/digits/judge", help="the classifier for FID and consistency")
    batch_size: int = option(100, help="images per sampling batch")
    seed: int = option(0, help="of the sampling noise (the models are not retrained)")
    resume: bool = option(False, help="keep the settings --json already holds")


def parse_args(argv: list[str] | None = None) -> Options:
    tiny = {"config": "configs/tiny.yaml", "train_steps": 4, "num_images": 20, "inference_steps": 2}
    tiny |= {"guidance_scales": [0.0, 0.3], "memory_sizes": ["4", "none"], "judge": None}
    return parse_options(Options, argv, __doc__, tiny)


def pipeline_dir(args: Options, name: str) -> str:
    """The model's pipeline folder: reused, or trained now into `<out>/<name>`."""
    if args.reuse:
        return os.path.join(args.reuse, name, "pipeline")
    overrides = {"output_dir": os.path.join(args.out, name), **run_length(args.train_steps), **MODELS[name]}
    return train(load_config(args.config, overrides))


def judge_for(args: Options, image_size: int):
    """The judge `(model, bank)`: the shipped digits judge, or (with --tiny) an untrained one at test size."""
    if args.judge:
        return load_classifier(args.judge)
    folder = os.path.join(args.out, "judge")
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same untrained judge every run: --tiny numbers repeat
        judge = SPMClassifier(
            image_size=image_size, stage_channels=(8,), blocks_per_stage=(1,), embed_dim=6, head="linear"
        )
    save_classifier(judge, None, folder)
    return load_classifier(folder)


def setting_key(record: dict) -> tuple:
    return record["model"], record["guidance_scale"], record["memory_size"], record.get("seed", 0)


def earlier_records(args: Options) -> list[dict]:
    """With --resume, the records --json already holds (measured with the same samples and steps)."""
    if not (args.resume and args.json and os.path.exists(args.json)):
        return []
    with open(args.json) as f:
        records = json.load(f)
    wrong = [r for r in records if (r["num_images"], r["inference_steps"]) != (args.num_images, args.inference_steps)]
    if wrong:
        raise ValueError(
            f"--resume: {args.json} holds settings measured with other --num-images or "
            f"--inference-steps: {setting_key(wrong[0])}"
        )
    return records


def seed_summary(records: list[dict]) -> list[dict]:
    """Per setting measured with several sampling seeds: the mean FID and consistency, and the FID's spread."""
    groups = {}
    for r in records:
        groups.setdefault(setting_key(r)[:3], []).append(r)
    rows = []
    for (model, w, memory_size), group in groups.items():
        if len(group) > 1:
            fids = torch.tensor([r["fid"] for r in group], dtype=torch.float64)
            consistency = sum(r["class_consistency"] for r in group) / len(group)
            rows.append(
                {
                    "model": model,
                    "guidance_scale": w,
                    "memory_size": memory_size,
                    "seeds": len(group),
                    "fid_mean": fids.mean().item(),
                    "fid_std": fids.std().item(),
                    "fid_min": fids.min().item(),
                    "fid_max": fids.max().item(),
                    "class_consistency_mean": consistency,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    base = load_config(args.config)
    training = load_digits_dataset(image_size=base.image_size, split="train", seed=base.seed)
    reference = save_images(to_unit_range(training.images), os.path.join(args.out, "reference"), prefix="train")
    judge, judge_bank = judge_for(args, base.image_size)
    labels = [i % 10 for i in range(args.num_images)]
    records = earlier_records(args)
    done = {setting_key(r) for r in records}
    for name in args.models:
        pipe = load_pipeline(pipeline_dir(args, name))
        sizes = [None] if not pipe.unet.uses_memory else [None if m == "none" else int(m) for m in args.memory_sizes]
        for w in args.guidance_scales:
            for memory_size in sizes:
                if (name, w, memory_size, args.seed) in done:
                    continue
                settings = SamplingSettings(
                    num_inference_steps=args.inference_steps,
                    guidance_scale=w,
                    memory_size=memory_size,
                    batch_size=args.batch_size,
                    seed=args.seed,
                )
                folder = os.path.join(args.out, "samples", f"{name}_w{w}_m{memory_size}_s{args.seed}")
                gen = SamplingPlan(labels, folder, settings).sample(name, pipe, folder)
                fid = compute_fid(folder, reference, "domain", judge)["fid"]
                predicted = judge.predict(gen.images, judge_bank).argmax(1).cpu()
                record = {
                    "model": name,
                    "guidance_scale": w,
                    "memory_size": memory_size,
                    "fid": fid,
                    "class_consistency": (predicted == gen.labels).float().mean().item(),
                    "seconds": gen.seconds,
                    "num_images": len(gen.images),
                    "inference_steps": args.inference_steps,
                    "seed": args.seed,
                }
                records.append(record)
                if args.json:
                    write_json(args.json, records)
                print(json.dumps(record), flush=True)
    settings = {key: value for key, value in vars(args).items() if key != "json"}
    settings["machine"] = describe_machine()
    settings["date"] = time.strftime("%Y-%m-%d")
    for row in seed_summary(records):
        print(json.dumps({"over_seeds": row}), flush=True)
    if args.json:
        write_json(args.json, records)
        write_json(os.path.splitext(args.json)[0] + "_settings.json", settings)
    return records


if __name__ == "__main__":
    main()
