"""Sampling cost of the SPM against its parametric twin, and our fusion against the materialised formula.

Part 1 (pipeline): the same network with `fusion_type="none"` (twin) and with memory fusion; 128 images,
50 DDIM steps, guidance 0.3; memory of 100, 256, 1024 items per class and the whole class (a synthetic
bank); both choices of what the unconditional branch reads (`all`: the paper's fallback, `class`). Memory
tokens are encoded once (timed separately, after a warm-up call that compiles) and reused. Prints time per
call, SPM / twin ratio, peak memory.

Part 2 (fusion only): 128 queries (16 tokens each, 10 classes) attend over their class's memory; our
chunked fusion (eager and compiled) against the materialised per-label formulation of the official code,
and the dot fusion over the same tokens (two matrix products: what the additive score costs beyond them).
On a CPU, `compile_fusion()` samples with the native additive kernel (`spm_gen/models/native_attention.py`);
`--no-native` keeps the compiled one in part 1, and part 2 times both.

    python benchmarks/sampling.py [--config configs/digits.yaml] [--fusion-types dot additive] [--steps 50]

On CUDA, the peak is `torch.cuda.max_memory_allocated`; on CPU, the rise of the process's resident
high-water mark (Linux).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler

from spm_gen import SPMDiffusionPipeline
from spm_gen.memory.readout import MemoryReadout
from spm_gen.memory.synthetic import synthetic_bank
from spm_gen.training.config import build_unet
from spm_gen.utils.benchmarking import BenchmarkOptions, describe_machine, parse_options, timed, write_json
from spm_gen.utils.dataclass_options import option


def pipeline_part(args: Options, device: torch.device) -> list[dict]:
    rows = []
    labels = [i % 10 for i in range(args.num_images)]
    twin = SPMDiffusionPipeline(build_unet(args.config, fusion_type="none"), DDIMScheduler()).to(device)
    twin.set_progress_bar_config(disable=True)
    cfg = twin.unet.config
    bank = synthetic_bank((cfg.in_channels, cfg.sample_size, cfg.sample_size), args.whole_class)

    def run(pipe, **kw):
        gen = torch.Generator(device).manual_seed(0)
        return pipe(
            class_labels=labels,
            num_inference_steps=args.steps,
            guidance_scale=0.3,
            generator=gen,
            output_type="pt",
            **kw,
        )

    twin(class_labels=labels[:2], num_inference_steps=1, output_type="pt")  # warm-up
    twin_s, twin_mb, _ = timed(device, run, twin)
    print(f"twin: {twin_s:.2f} s, peak {twin_mb:.0f} MB")
    rows.append({"model": "twin", "seconds": twin_s, "peak_mb": twin_mb})
    for fusion_type in args.fusion_types:
        unet = build_unet(
            args.config,
            fusion_type=fusion_type,
            memory_resolutions=tuple(args.memory_resolutions),
            anchor_pixels=args.anchor_pixels,
        )
        if fusion_type == "additive" and not args.eager:
            unet.compile_fusion(dynamic=True, native=not args.no_native)
        kernel = {"dot": "sdpa", "additive": "eager" if args.eager else "compiled"}[fusion_type]
        if fusion_type == "additive" and unet.fusion.has_native_kernel and device.type == "cpu":
            kernel = "native"
        spm = SPMDiffusionPipeline(unet, DDIMScheduler(), bank, default_memory_retrieval=args.memory_retrieval)
        spm = spm.to(device)
        spm.set_progress_bar_config(disable=True)
        for size in args.memory_sizes:
            memory_size = None if size == "whole" else int(size)
            # compilation (the first size only; seconds, more with a cold inductor cache) is not encoding
            warmup_s, _, _ = timed(
                device, spm, class_labels=labels[:20], num_inference_steps=1, memory_size=memory_size, output_type="pt"
            )
            # encoding: every selected item once, then cached across calls, steps and branches
            spm.memory_cache.clear()
            encode_s, _, _ = timed(
                device, spm, class_labels=labels, num_inference_steps=1, memory_size=memory_size, output_type="pt"
            )
            for uncond in args.unconditional_memory:
                spm(
                    class_labels=labels[:20],
                    num_inference_steps=1,
                    memory_size=memory_size,
                    output_type="pt",
                    unconditional_memory=uncond,
                )
                seconds, peak, _ = timed(device, run, spm, memory_size=memory_size, unconditional_memory=uncond)
                rounds = [(seconds, twin_s)]
                for _ in range(args.repeats - 1):  # the twin again beside each SPM call: drift hits both
                    twin_again = timed(device, run, twin)[0]
                    rounds.append(
                        (timed(device, run, spm, memory_size=memory_size, unconditional_memory=uncond)[0], twin_again)
                    )
                ratios = sorted(spm_s / twin_round for spm_s, twin_round in rounds)
                row = {
                    "model": f"spm-{fusion_type}",
                    "kernel": kernel,
                    "memory_resolutions": list(args.memory_resolutions),
                    "memory_retrieval": args.memory_retrieval,
                    "memory_per_class": memory_size or args.whole_class,
                    "unconditional_memory": uncond,
                    "seconds": seconds,
                    "ratio_to_twin": ratios[len(ratios) // 2],  # the median over rounds (one round: seconds / twin)
                    "ratios": ratios,
                    "peak_mb": peak,
                    "first_call_with_encoding_s": encode_s,
                    "warmup_call_s": warmup_s,
                }
                rows.append(row)
                print(
                    f"spm {fusion_type:<8s} ({kernel}) memory {row['memory_per_class']:>5}/class uncond={uncond:<5s}: "
                    f"{seconds:7.2f} s  ratio {row['ratio_to_twin']:5.2f}  peak {peak:6.0f} MB  (1-step call incl. encoding {encode_s:.2f} s; warm-up {warmup_s:.2f} s)"
                    + (f"  ratios {[round(r, 2) for r in ratios]}" if args.repeats > 1 else "")
                )
    return rows


def materialised_per_label(fusion, q, q_labels, s, s_labels):
    """The official formulation: a loop over labels, each materialising (n, L, T, H) before the score."""
    out = torch.empty_like(q)
    w = fusion.score.weight[0]
    for label in torch.unique(q_labels).tolist():
        rows = q_labels == label
        a = fusion.to_query(q[rows])  # (n, L, H)
        b = fusion.to_memory(s[s_labels == label]).reshape(-1, a.shape[-1])  # (T, H)
        scores = (torch.relu(a[:, :, None, :] + b[None, None]) * w).sum(-1)  # (n, L, T) from (n, L, T, H)
        out[rows] = torch.softmax(scores, dim=-1) @ b
    return out


def fusion_part(args: Options, device: torch.device) -> list[dict]:
    unet = build_unet(args.config, fusion_type="additive").to(device).eval()
    channels = unet.config.block_out_channels[-1]
    fusion = unet.fusion
    compiled = build_unet(args.config, fusion_type="additive").to(device).eval().fusion
    compiled.load_state_dict(fusion.state_dict())
    compiled.compile_scores(native=False, dynamic=True)
    native = build_unet(args.config, fusion_type="additive").to(device).eval().fusion
    native.load_state_dict(fusion.state_dict())
    native.compile_scores(dynamic=True)  # on a CPU: the native kernel; elsewhere the same as `compiled`
    dot = build_unet(args.config, fusion_type="dot").to(device).eval().fusion
    g = torch.Generator(device).manual_seed(0)
    q = torch.randn(args.num_images, 16, channels, device=device, generator=g)
    q_labels = torch.arange(args.num_images, device=device) % 10
    rows = []
    for size in args.memory_sizes:
        per_class = args.whole_class if size == "whole" else int(size)
        s = torch.randn(per_class * 10, 16, channels, device=device, generator=g)
        s_labels = torch.arange(per_class * 10, device=device) % 10
        row = {"memory_per_class": per_class}
        readout = MemoryReadout.from_labels(q_labels, s_labels)  # decided once, outside the timing
        with torch.no_grad():
            compiled(q, s, readout)  # compile outside the timing
            for name, fn in (
                ("materialised", materialised_per_label),
                ("ours_eager", fusion),
                ("ours_compiled", compiled),
                ("ours_native", native),
                ("dot", dot),
            ):
                call = (fusion, q, q_labels, s, s_labels) if name == "materialised" else (q, s, readout)
                fn(*call)
                seconds, peak, out = timed(device, fn, *call)
                row[f"{name}_s"], row[f"{name}_peak_mb"] = seconds, peak
                if name != "dot":  # another fusion, another output
                    row.setdefault("reference", out)
                    row[f"{name}_max_abs_err"] = (out - row["reference"]).abs().max().item()
        del row["reference"]
        rows.append(row)
        print(
            f"fusion, memory {per_class:>5}/class: materialised {row['materialised_s']:.3f} s ({row['materialised_peak_mb']:.0f} MB)"
            f" | ours eager {row['ours_eager_s']:.3f} s ({row['ours_eager_peak_mb']:.0f} MB)"
            f" | ours compiled {row['ours_compiled_s']:.3f} s ({row['ours_compiled_peak_mb']:.0f} MB)"
            f" | speed-up {row['materialised_s'] / row['ours_eager_s']:.1f}x eager, {row['materialised_s'] / row['ours_compiled_s']:.1f}x compiled"
            f" | ours native {row['ours_native_s']:.3f} s ({row['ours_compiled_s'] / row['ours_native_s']:.1f}x compiled)"
            f" | dot {row['dot_s']:.3f} s (compiled additive / dot {row['ours_compiled_s'] / row['dot_s']:.1f}x,"
            f" native / dot {row['ours_native_s'] / row['dot_s']:.1f}x)"
        )
    return rows


@dataclass
class Options(BenchmarkOptions):
    config: str = option("configs/digits.yaml", help="the model config (untrained weights: speed only)")
    fusion_types: list[str] = option(help="the SPMs' fusion types", default_factory=lambda: ["dot", "additive"])
    memory_sizes: list[str] = option(
        help="memory items read per class (whole: every item)", default_factory=lambda: ["100", "256", "1024", "whole"]
    )
    whole_class: int = option(1500, help="items per class in the synthetic bank")
    unconditional_memory: list[str] = option(
        help="what the unconditional branch reads", default_factory=lambda: ["all", "class"]
    )
    num_images: int = option(128, help="images per timed sampling run")
    steps: int = option(50, help="DDIM steps")
    eager: bool = option(False, help="do not compile the additive score in part 1")
    no_native: bool = option(False, help="part 1: compiled additive fusion without the native CPU kernel")
    repeats: int = option(1, help="rounds of (twin, SPM) per row; the ratio is their median")
    memory_resolutions: list[int] = option(
        help="the SPM's memory_resolutions (content memory)", nargs="*", default_factory=lambda: []
    )
    memory_retrieval: str = option("random", help="what the SPM reads (part 1)", choices=["random", "anchor"])
    anchor_pixels: bool = option(False, help="the SPM reads its anchor's pixels (content memory)")
    skip_pipeline: bool = option(False, help="skip part 2 (the pipeline)")
    skip_fusion: bool = option(False, help="skip part 1 (the fusion)")


def main(argv: list[str] | None = None) -> dict:
    tiny = {"config": "configs/tiny.yaml", "memory_sizes": ["4", "whole"], "whole_class": 8, "num_images": 4}
    args = parse_options(
        Options,
        argv,
        __doc__,
        tiny | {"steps": 2, "eager": True, "unconditional_memory": ["class"], "skip_fusion": True},
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = describe_machine(device)
    print(
        f"device: {name}; torch {torch.__version__}; config {args.config}; {args.num_images} images, {args.steps} DDIM steps"
    )
    results = {"settings": vars(args), "machine": name}
    if not args.skip_pipeline:
        results["pipeline"] = pipeline_part(args, device)
    if not args.skip_fusion:
        results["fusion"] = fusion_part(args, device)
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
