"""Training step cost of the SPM against its twin, with the additive score eager and `torch.compile`d.

One optimisation step of the training loop (`Optimization.step`: memory encoding, forward, backward, AdamW)
on configs/digits.yaml with 256 support images per batch (the paper's), batch 64, synthetic data: the twin,
additive fusion eager and compiled (`compile_fusion`), and dot fusion. Seconds per step after warm-up steps
that include the compilation, and the ratio to the twin. Exactness: the loss and every gradient of one
batch from the same weights, eager against compiled (max absolute difference).

    python benchmarks/training_step.py [--steps 20] [--json benchmarks/training_step_cpu.json]
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from diffusers import DDPMScheduler

from spm_gen.models.unet_spm import SPMUNet2DModel
from spm_gen.reporting.measures import Measure, table
from spm_gen.training import load_config
from spm_gen.training.config import TrainConfig
from spm_gen.training.losses import LossOptions, diffusion_loss
from spm_gen.training.throughput import synthetic_run, training_step_seconds
from spm_gen.utils.benchmarking import BenchmarkOptions, describe_machine, parse_options, write_json
from spm_gen.utils.dataclass_options import option

SETTINGS = {  # name -> overrides
    "twin": {"fusion_type": "none"},
    "additive (eager)": {"fusion_type": "additive", "compile_fusion": False},
    "additive (compiled)": {"fusion_type": "additive", "compile_fusion": True},
    "dot": {"fusion_type": "dot"},
}

COLUMNS = [
    Measure("setting", "setting"),
    Measure("seconds_per_step", "time per step", "s", "lower"),
    Measure("ratio_to_twin", "x twin", better="lower"),
    Measure("peak_mb", "peak memory", "MB", "lower"),
]


def config_of(args: Options, overrides: dict, out: str) -> TrainConfig:
    common = {"output_dir": out, "train_batch_size": args.batch_size, "memory_per_batch": args.memory}
    return load_config(args.config, {**common, **overrides})


def loss_and_gradients(config: TrainConfig, compiled: bool) -> tuple[float, dict[str, torch.Tensor]]:
    """The loss and gradients of one batch from the seeded initial weights (CPU, fp32)."""
    torch.manual_seed(0)
    unet = SPMUNet2DModel(**config.model)
    if compiled:
        unet.compile_fusion(dynamic=True)
    run = synthetic_run(config, Accelerator(cpu=True), unet)
    generator, device_generator = run.generators(0)
    noise = DDPMScheduler(config.num_train_timesteps, config.beta_start, config.beta_end, "linear")
    loss = diffusion_loss(unet, noise, run.draw(generator), device_generator, LossOptions())
    loss.backward()
    return float(loss.detach()), {name: p.grad.clone() for name, p in unet.named_parameters() if p.grad is not None}


@dataclass
class Options(BenchmarkOptions):
    config: str = option("configs/digits.yaml", help="the model and training config")
    batch_size: int = option(64, help="images per training batch")
    memory: int = option(256, help="support images per batch (the paper's 256)")
    steps: int = option(20, help="timed training steps")
    warmup: int = option(3, help="steps before timing (compilation included)")
    settings: list[str] = option(help="settings", choices=list(SETTINGS), default_factory=lambda: list(SETTINGS))


def main(argv: list[str] | None = None) -> list[dict]:
    logging.basicConfig(level=logging.WARNING)
    tiny = {"config": "configs/tiny.yaml", "batch_size": 4, "memory": 8, "steps": 1, "warmup": 1}
    args = parse_options(Options, argv, __doc__, tiny)
    device = torch.device("cpu")
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for name in args.settings:
            start = time.perf_counter()
            seconds, peak = training_step_seconds(config_of(args, SETTINGS[name], out), device, args.steps, args.warmup)
            wall = time.perf_counter() - start
            rows.append({"setting": name, "seconds_per_step": seconds, "peak_mb": peak, "wall_s_incl_warmup": wall})
            print(json.dumps(rows[-1]), flush=True)
        twin = next((r["seconds_per_step"] for r in rows if r["setting"] == "twin"), None)
        for row in rows:
            row["ratio_to_twin"] = None if twin is None else row["seconds_per_step"] / twin
        additive = config_of(args, SETTINGS["additive (eager)"], out)
        eager_loss, eager_grads = loss_and_gradients(additive, compiled=False)
        compiled_loss, compiled_grads = loss_and_gradients(additive, compiled=True)
    exactness = {
        "loss_eager": eager_loss,
        "loss_compiled": compiled_loss,
        "max_abs_gradient_difference": max(
            float((eager_grads[k] - compiled_grads[k]).abs().max()) for k in eager_grads
        ),
        "max_abs_gradient": max(float(g.abs().max()) for g in eager_grads.values()),
    }
    print(table(rows, COLUMNS))
    print(json.dumps(exactness))
    if args.json:
        result = {"machine": describe_machine(), "date": time.strftime("%Y-%m-%d"), "settings": vars(args)}
        write_json(args.json, {**result, "rows": rows, "exactness": exactness})
    return rows


if __name__ == "__main__":
    main()
