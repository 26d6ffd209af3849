"""Pieces the benchmark scripts share: their command line, the machine's description, timing with the device
synchronised, synthetic data."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from .atomic import atomic_write_text
from .dataclass_options import add_options, check_options, from_options, option
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


@dataclass(kw_only=True)
class BenchmarkOptions:
    """The options every benchmark shares (each declares its own in a dataclass extending this one, `--out` too
    when it trains or samples into a run folder, and redeclares `json` where its numbers have a committed
    file)."""

    json: str | None = option(None, help="write the numbers and settings here")
    tiny: bool = option(False, help="a plumbing run at test size, in seconds, whose numbers mean nothing")


@dataclass(kw_only=True)
class RunFolderOptions(BenchmarkOptions):
    """A benchmark that trains or samples into a run folder: `--out`, `runs/<the benchmark's name>` unless
    given."""

    out: str | None = option(None, help="the run folder (default: runs/<the benchmark's file name>)")

    def __post_init__(self) -> None:
        if self.out is None:
            module = sys.modules[type(self).__module__]
            self.out = os.path.join("runs", os.path.splitext(os.path.basename(module.__file__))[0])


def parse_options(cls: type, argv: list[str] | None, doc: str, tiny: dict[str, Any] | None = None) -> Any:
    """The checked options `cls` of a benchmark's command line (its help: the first line of `doc`); with
    `--tiny` the values of `tiny` replace the parsed ones (`with_values`). A bad value: argparse's error (one
    line naming its flag, exit 2)."""
    tiny = dict(tiny or {})
    shown = ", ".join(f"{key}={value}" for key, value in tiny.items())
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0], epilog=f"--tiny: {shown or '-'}")
    add_options(parser, cls)
    options = from_options(cls, parser.parse_args(argv))
    if options.tiny:
        options = with_values(options, tiny)
    try:
        check_options(options)
    except ValueError as e:
        parser.error(str(e))  # one line and exit 2, as argparse's own refusals
    return options


def with_values(options: Any, values: dict[str, Any]) -> Any:
    """A copy of `options` with `values` (by field name; a name of its nested settings' fields changes those),
    made with `dataclasses.replace`. An unknown name: ValueError."""
    own = {f.name for f in dataclasses.fields(options)}
    changes = {key: value for key, value in values.items() if key in own}
    for f in dataclasses.fields(options):
        inner = getattr(options, f.name)
        if dataclasses.is_dataclass(inner) and f.name not in changes:
            names = {g.name for g in dataclasses.fields(inner)}
            nested = {key: value for key, value in values.items() if key not in own and key in names}
            if nested:
                changes[f.name] = dataclasses.replace(inner, **nested)
                own |= set(nested)
    unknown = sorted(set(values) - own)
    if unknown:
        raise ValueError(f"{type(options).__name__} has no option {unknown}")
    return dataclasses.replace(options, **changes)


def recorded_settings(options: Any) -> dict[str, Any]:
    """What a benchmark's json records of its command line: its options (the fields of nested settings in
    place of the settings object) and what it derived from them."""
    recorded: dict[str, Any] = {}
    for key, value in vars(options).items():
        if dataclasses.is_dataclass(value):
            recorded.update(dataclasses.asdict(value))
        else:
            recorded[key] = value
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
