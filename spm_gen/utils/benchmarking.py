"""Pieces the benchmark scripts share: their command line, the machine's description, timing with the device
synchronised, synthetic data."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from typing import Any

import torch

from .atomic import atomic_write_text
from .dataclass_options import add_options, flags_of, from_options, named_as_options
from .resources import peak_mb, reset_peak


def timed(device: torch.device, fn, *args, **kwargs) -> tuple[float, float, object]:
    """`(seconds, peak MB, result)` of `fn(*args, **kwargs)`; CUDA work is waited for before the clock stops."""
    start_mem = reset_peak(device)
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, peak_mb(device, start_mem), result


def synthetic_images(
    shape: tuple[int, int, int], per_class: int, classes: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` random uint8 images of each class (labels cycling), seeded."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (per_class * classes, *shape), generator=g, dtype=torch.uint8)
    return images, torch.arange(per_class * classes) % classes


class BenchmarkParser(argparse.ArgumentParser):
    """The command line every benchmark shares: `--json` (where its numbers and settings go), `--out` (its run
    folder, for a benchmark that trains or samples into one) and `--tiny` (a plumbing run at test size, in
    seconds, whose numbers mean nothing): the values of `tiny` replace the parsed ones. With `settings` (a
    dataclass of `option(...)` fields) its fields are options too, and the parsed arguments carry the checked
    `settings` instance."""

    def __init__(
        self,
        doc: str,
        json: str | None = None,
        out: str | None = None,
        tiny: dict[str, Any] | None = None,
        settings: type | None = None,
    ):
        super().__init__(description=doc.strip().splitlines()[0])
        self.tiny = dict(tiny or {})
        self.settings = settings
        if settings is not None:
            add_options(self, settings)
        self.add_argument("--json", default=json, help=f"write the numbers and settings here (default: {json})")
        if out is not None:
            self.add_argument("--out", default=out, help=f"the run folder (default: {out})")
        settings = ", ".join(f"{key}={value}" for key, value in self.tiny.items())
        self.add_argument("--tiny", action="store_true", help=f"test size, numbers meaningless ({settings})")

    def parse_args(self, args=None, namespace=None):  # noqa: D102 - argparse's, with --tiny applied
        parsed = super().parse_args(args, namespace)
        if parsed.tiny:
            for key, value in self.tiny.items():
                setattr(parsed, key, value)
        if self.settings is not None:
            settings = from_options(self.settings, parsed)
            with named_as_options(self.settings):
                settings.check()
            for name in flags_of(self.settings):  # one owner: the settings, not their parsed copies
                delattr(parsed, name)
            parsed.settings = settings
        return parsed


def recorded_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What a benchmark's json records of its command line: its arguments, with its settings' fields in place of
    the settings object."""
    recorded = {key: value for key, value in vars(args).items() if key != "settings"}
    if "settings" in vars(args):
        recorded.update(dataclasses.asdict(args.settings))
    return recorded


def describe_machine(device: torch.device | None = None) -> str:
    """One line naming where numbers were measured: the GPU, or the CPU's cores and architecture; torch's version
    and threads."""
    device = device or torch.device("cpu")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{os.cpu_count()}-core {platform.machine()} CPU"
    return f"{name}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def write_json(path: str, data: Any) -> str:
    """Writes a benchmark's numbers and settings atomically (indented; values json cannot hold as text), so an
    interrupted run leaves the previous file whole."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, default=str))
    return path
