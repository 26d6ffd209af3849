"""GPU suite (issue: GPU): training throughput, sampling cost against the twin, and bf16 against fp32.

(a) training images/s of the SPM (additive fusion, `memory_per_batch` memory images per batch) and of its
    twin, fp32 and bf16 (accelerate's autocast), on the configs/cifar10_ddpm.yaml network, batch 128;
(b) sampling 128 images x 50 DDIM steps at w = 0.3: the twin, then the SPM with additive fusion (its score
    `torch.compile`d) and dot fusion at 100 / 256 / 1,024 memory items per class, with the unconditional
    branch reading its class's memory ("class", the default) or all the batch's memory ("all"): seconds,
    ratio to the twin, peak memory;
(c) bf16 against fp32 sampling from the same initial noise: how far the samples are apart;
(d) on CUDA, whether the denoising loop synchronises with the host: steps 2.. of an SPM call run under
    `torch.cuda.set_sync_debug_mode("error")`.

The weights are untrained and the data synthetic (timings do not depend on them; nothing is downloaded).

    python benchmarks/gpu_suite.py          # on a CUDA machine: writes benchmarks/gpu_<device>.json
    python benchmarks/gpu_suite.py --tiny   # the same code paths on the CPU at test size, in about a minute

Peak memory: `torch.cuda.max_memory_allocated` on CUDA, the rise of the resident high-water mark on CPU.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field

import torch
from accelerate.state import AcceleratorState
from diffusers import DDPMScheduler

from spm_gen import SPMDiffusionPipeline
from spm_gen.memory.synthetic import synthetic_bank
from spm_gen.training import load_config
from spm_gen.training.config import build_unet
from spm_gen.training.loop import official_ddim
from spm_gen.training.throughput import training_step_seconds
from spm_gen.utils.benchmarking import BenchmarkOptions, describe_machine, parse_options, timed, write_json


@dataclass
class Suite:
    """The suite's sizes; `tiny()` is the CPU test size."""

    config: str = "configs/cifar10_ddpm.yaml"
    batch_size: int = 128
    memory_per_batch: int = 256
    train_steps: int = 20
    warmup_steps: int = 3
    num_images: int = 128
    inference_steps: int = 50
    guidance_scale: float = 0.3
    memory_sizes: list[int] = field(default_factory=lambda: [100, 256, 1024])
    fusion_types: list[str] = field(default_factory=lambda: ["additive", "dot"])
    unconditional_memory: list[str] = field(default_factory=lambda: ["class", "all"])
    compile_fusion: bool = True

    @classmethod
    def tiny(cls) -> Suite:
        return cls("configs/tiny.yaml", 8, 16, 2, 1, 8, 2, 0.3, [4, 8])


def device_and_name(cpu: bool = False) -> tuple[torch.device, str]:
    if torch.cuda.is_available() and not cpu:
        return torch.device("cuda"), torch.cuda.get_device_name()
    return torch.device("cpu"), describe_machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def training_row(suite: Suite, device: torch.device, fusion_type: str, precision: str, out: str) -> dict:
    """Images per second of `train_steps` optimisation steps (after `warmup_steps`), the training loop's own
    step (`Optimization.step`) on synthetic data."""
    overrides = {"fusion_type": fusion_type, "mixed_precision": precision, "output_dir": out}
    overrides |= {"train_batch_size": suite.batch_size, "memory_per_batch": suite.memory_per_batch}
    config = load_config(suite.config, overrides)
    seconds, peak = training_step_seconds(config, device, suite.train_steps, suite.warmup_steps)
    model = "twin" if fusion_type == "none" else f"spm-{fusion_type}"
    return {
        "part": "training",
        "model": model,
        "precision": precision,
        "images_per_s": suite.batch_size / seconds,
        "peak_mb": peak,
    }


def _pipeline(suite: Suite, device: torch.device, fusion_type: str, bank=None) -> SPMDiffusionPipeline:
    torch.manual_seed(0)
    unet = build_unet(suite.config, fusion_type=fusion_type)
    if fusion_type == "additive" and suite.compile_fusion:
        unet.compile_fusion(dynamic=True)
    pipe = SPMDiffusionPipeline(
        unet, official_ddim(DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")), bank
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample(suite: Suite, pipe: SPMDiffusionPipeline, device: torch.device, num_images: int, **kwargs):
    labels = [i % 10 for i in range(num_images)]
    generator = torch.Generator(device).manual_seed(0)
    return pipe(
        class_labels=labels,
        num_inference_steps=suite.inference_steps,
        guidance_scale=suite.guidance_scale,
        generator=generator,
        output_type="pt",
        **kwargs,
    ).images


def sampling_rows(suite: Suite, device: torch.device) -> list[dict]:
    """The twin, then each fusion type x memory size x unconditional memory, each after a warm-up call."""
    twin = _pipeline(suite, device, "none")
    _sample(suite, twin, device, 2)
    twin_s, twin_mb, _ = timed(device, _sample, suite, twin, device, suite.num_images)
    rows = [{"part": "sampling", "model": "twin", "seconds": twin_s, "ratio_to_twin": 1.0, "peak_mb": twin_mb}]
    cfg = twin.unet.config
    bank = synthetic_bank((cfg.in_channels, cfg.sample_size, cfg.sample_size), max(suite.memory_sizes))
    for fusion_type in suite.fusion_types:
        spm = _pipeline(suite, device, fusion_type, bank)
        for memory_size in suite.memory_sizes:
            for unconditional in suite.unconditional_memory:
                extra = {"memory_size": memory_size, "unconditional_memory": unconditional}
                _sample(suite, spm, device, suite.num_images, **extra)  # warm-up: compile, token cache
                seconds, peak, _ = timed(device, _sample, suite, spm, device, suite.num_images, **extra)
                rows.append(
                    {
                        "part": "sampling",
                        "model": f"spm-{fusion_type}",
                        **extra,
                        "seconds": seconds,
                        "ratio_to_twin": seconds / twin_s,
                        "peak_mb": peak,
                    }
                )
    return rows


def bf16_agreement(suite: Suite, device: torch.device) -> dict:
    """The additive SPM sampled in fp32 and after `pipe.to(torch.bfloat16)` from the same initial noise."""
    cfg = build_unet(suite.config).config
    bank = synthetic_bank((cfg.in_channels, cfg.sample_size, cfg.sample_size), suite.memory_sizes[0])
    pipe = _pipeline(suite, device, "additive", bank)
    shape = (suite.num_images, cfg.in_channels, cfg.sample_size, cfg.sample_size)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device)
    fp32 = _sample(suite, pipe, device, suite.num_images, latents=noise.clone(), memory_size=suite.memory_sizes[0])
    pipe.to(torch.bfloat16)
    bf16 = _sample(suite, pipe, device, suite.num_images, latents=noise.clone(), memory_size=suite.memory_sizes[0])
    diff = (bf16.float() - fp32.float()).abs()
    return {
        "part": "bf16_vs_fp32",
        "model": "spm-additive",
        "dtype": str(bf16.dtype),
        "max_abs_diff": diff.max().item(),
        "mean_abs_diff": diff.mean().item(),
        "pixel_range": "[0, 1]",
    }


def host_sync_check(suite: Suite, device: torch.device) -> dict:
    """Runs the additive SPM's denoising steps after the first under CUDA's sync-debug mode "error": any
    host synchronisation inside the loop raises. Not applicable on the CPU."""
    row = {"part": "host_sync", "model": "spm-additive", "syncs_in_step_loop": None}
    if device.type != "cuda":
        return row
    cfg = build_unet(suite.config).config
    pipe = _pipeline(suite, device, "additive", synthetic_bank((cfg.in_channels, cfg.sample_size, cfg.sample_size), 8))

    def strict_after_first_step(p, i, t, tensors):
        torch.cuda.set_sync_debug_mode("error" if i < p.num_timesteps - 1 else "default")
        return tensors

    try:
        _sample(suite, pipe, device, suite.num_images, memory_size=8, callback_on_step_end=strict_after_first_step)
        row["syncs_in_step_loop"] = False
    except RuntimeError as e:
        row["syncs_in_step_loop"], row["error"] = True, str(e)[:300]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return row


def print_table(device_name: str, rows: list[dict]) -> None:
    print(f"\n{device_name}, torch {torch.__version__}")
    print(f"{'part':<10s} {'model':<13s} {'setting':<28s} {'value':>14s} {'vs twin':>8s} {'peak MB':>9s}")
    for r in rows:
        if r["part"] == "training":
            setting, value, ratio = r["precision"], f"{r['images_per_s']:9.0f} img/s", ""
        elif r["part"] == "sampling":
            setting = f"{r.get('memory_size', '-')}/class, uncond {r.get('unconditional_memory', '-')}"
            value, ratio = f"{r['seconds']:11.2f} s", f"{r['ratio_to_twin']:7.2f}x"
        elif r["part"] == "host_sync":
            setting, value, ratio = "syncs in the step loop", str(r["syncs_in_step_loop"]), ""
        else:
            setting, value, ratio = (
                f"{r['dtype']} vs fp32",
                f"max {r['max_abs_diff']:.3g}",
                f"mean {r['mean_abs_diff']:.2g}",
            )
        print(
            f"{r['part']:<10s} {r['model']:<13s} {setting:<28s} {value:>14s} {ratio:>8s} {r.get('peak_mb', float('nan')):9.0f}"
        )


def main(argv: list[str] | None = None) -> dict:
    args = parse_options(BenchmarkOptions, argv, __doc__)
    suite = Suite.tiny() if args.tiny else Suite()
    device, name = device_and_name(cpu=args.tiny)
    if not args.tiny and device.type != "cuda":
        raise SystemExit("no CUDA device: run with --tiny on the CPU")
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as out:
        try:
            for fusion_type in ("additive", "none"):
                for precision in ("no", "bf16"):
                    rows.append(training_row(suite, device, fusion_type, precision, out))
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)  # leave no bf16 state to the caller
    rows += sampling_rows(suite, device)
    rows.append(bf16_agreement(suite, device))
    rows.append(host_sync_check(suite, device))
    print_table(name, rows)
    result = {
        "device": name,
        "machine": describe_machine(device),
        "suite": asdict(suite),
        "rows": rows,
        "seconds": time.perf_counter() - start,
        "date": time.strftime("%Y-%m-%d"),
    }
    default = (
        "runs/gpu_suite_tiny.json" if args.tiny else f"benchmarks/gpu_{re.sub(r'[^a-z0-9]+', '_', name.lower())}.json"
    )
    path = write_json(args.json or default, result)
    print(f"\n{time.perf_counter() - start:.0f} s in all; wrote {path}")
    return result


if __name__ == "__main__":
    main()
