"""Memory bank timings on banks of 10^4, 10^5 and 10^6 items (1x8x8 images, 512-d embeddings).

Prints: remove 1 id, remove 1,000 ids, remove one class (of 10), `nearest` for 256 queries, `select` k=1024.
Targets on a 2-core CPU: remove 1 id from 10^6 <= 100 ms; 1,000 ids <= 1 s; nearest (256 x 10^6 x 512) <= 2 s.

Saved banks (a second table): `save_pretrained` into a new folder, then, each in a fresh process, loading
the bank, and `spm-gen remove` of 1 and of 1,000 ids in place: wall time, that time beyond the process's
start-up (after its imports; also as CPU seconds, the better measure on a busy machine), bytes written (the
files the removal created) and peak resident memory (also as a multiple of the bank's data). Targets at 10^6: removing one id
takes <= 3 s beyond start-up and writes <= 5% of the bank's bytes; loading peaks at <= 1.3x the data.

    python benchmarks/memory_bank.py [--sizes 10000 100000 1000000] [--repeats 3] [--json FILE]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import torch

from spm_gen.memory.synthetic import synthetic_bank
from spm_gen.utils.atomic import atomic_write_text
from spm_gen.utils.benchmarking import BenchmarkOptions, describe_machine, parse_options, write_json
from spm_gen.utils.dataclass_options import option
from spm_gen.utils.resources import peak_mb, reset_peak
from spm_gen.utils.validation import check_values

TARGETS_S = {"remove_1_id": 0.1, "remove_1000_ids": 1.0, "nearest_256": 2.0}


def _time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _peak_extra_mb(fn) -> float:
    """Peak resident memory that `fn` adds (Linux)."""
    baseline = reset_peak(torch.device("cpu"))
    fn()
    return peak_mb(torch.device("cpu"), baseline)


def bench(size: int, repeats: int, dim: int = 512) -> dict:
    start = time.perf_counter()
    bank = synthetic_bank((1, 8, 8), size // 10, embedding_dim=dim)
    build_s = time.perf_counter() - start
    rng = torch.Generator().manual_seed(1)
    # disjoint batches of ids drawn before timing; each repeat removes a fresh batch
    perm = torch.randperm(size, generator=rng).tolist()
    ids = bank.ids
    singles = iter([[ids[i]] for i in perm[:repeats]])
    thousands = iter([[ids[i] for i in perm[repeats + 1000 * r : repeats + 1000 * (r + 1)]] for r in range(repeats)])

    results = {"items": size, "build_s": build_s}
    results["remove_1_id"] = _time(lambda: bank.remove(ids=next(singles)), repeats)
    results["remove_1000_ids"] = _time(lambda: bank.remove(ids=next(thousands)), repeats)
    results["remove_1_class"] = _time(lambda: bank.remove(labels=[9]), 1)
    queries = torch.randn(256, dim, generator=rng)
    results["nearest_256_first_call"] = _time(lambda: bank.nearest(queries, k=10), 1)
    results["nearest_256"] = _time(lambda: bank.nearest(queries, k=10), repeats)
    results["nearest_peak_extra_mb"] = _peak_extra_mb(lambda: bank.nearest(queries, k=10))
    results["select_k1024"] = _time(
        lambda: bank.seeded_ids(3, 1024, generator=torch.Generator().manual_seed(0)), repeats
    )
    return results


CHILD = """
import json, sys, time
import torch
from spm_gen import MemoryBank
from spm_gen.memory.deletion import DeletionRequest, delete_from_folder, read_ids_file
from spm_gen.utils.resources import peak_mb, reset_peak

cpu = torch.device("cpu")
baseline, start, cpu_start = reset_peak(cpu), time.perf_counter(), time.process_time()
if sys.argv[1] == "load":
    MemoryBank.from_pretrained(sys.argv[2] + "/memory_bank")
else:
    request = DeletionRequest(ids=read_ids_file(sys.argv[3]))
    delete_from_folder(sys.argv[2], request, dry_run=False, output=None)
seconds, cpu_s, added = time.perf_counter() - start, time.process_time() - cpu_start, peak_mb(cpu, baseline)
print(json.dumps({"seconds": seconds, "cpu_s": cpu_s, "baseline_mb": baseline, "peak_mb": baseline + added}))
"""


def _child(*args: str) -> dict:
    """Runs CHILD in a fresh Python process: seconds after its imports, its wall time and peak resident MB."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - start}


def _files(folder: str) -> dict[str, int]:
    return {os.path.join(r, n): os.path.getsize(os.path.join(r, n)) for r, _, names in os.walk(folder) for n in names}


def bench_saved(size: int, dim: int = 512) -> dict:
    """Save, then load and removals of 1 and 1,000 ids by `spm-gen remove`'s function, each in a fresh process."""
    bank = synthetic_bank((1, 8, 8), size // 10, embedding_dim=dim)
    perm = torch.randperm(size, generator=torch.Generator().manual_seed(2)).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "model")
        start = time.perf_counter()
        bank.save_pretrained(os.path.join(folder, "memory_bank"))
        results = {"items": size, "save_s": time.perf_counter() - start}
        results["data_mb"] = sum(_files(folder).values()) / 2**20
        del bank
        results["load"] = _child("load", folder)
        for name, ids in (("remove_1", [perm[0]]), ("remove_1000", perm[1:1001])):
            ids_file = os.path.join(tmp, f"{name}.txt")
            atomic_write_text(ids_file, "\n".join(str(i) for i in ids))
            before = _files(folder)
            results[name] = _child("remove", folder, ids_file)
            written = sum(size for path, size in _files(folder).items() if before.get(path) != size)
            results[name]["written_mb"] = written / 2**20
    return results


SAVED_TARGETS = {"remove_1 s beyond start-up": 3.0, "remove_1 CPU s": 3.0, "remove_1 written / data": 0.05,
                 "load added peak / data": 1.3}  # fmt: skip


def saved_ratios(r: dict) -> dict:
    load = r["load"]
    return {
        "remove_1 s beyond start-up": r["remove_1"]["seconds"],
        "remove_1 CPU s": r["remove_1"]["cpu_s"],
        "remove_1 written / data": r["remove_1"]["written_mb"] / r["data_mb"],
        "load added peak / data": (load["peak_mb"] - load["baseline_mb"]) / r["data_mb"],
    }


@dataclass
class Options(BenchmarkOptions):
    sizes: list[int] = option(help="bank sizes, multiples of 10", default_factory=lambda: [10_000, 100_000, 1_000_000])
    repeats: int = option(3, help="timed repeats of each operation")
    saved_only: bool = option(False, help="only the saved-bank table (keeps the rest of --json)")

    def check(self) -> None:
        sizes = all(size > 0 and size % 10 == 0 for size in self.sizes)
        check_values(self, {"sizes": sizes}, {"sizes": " (multiples of 10: ten classes of equal size)"})


def main(argv: list[str] | None = None) -> dict:
    args = parse_options(Options, argv, __doc__, {"sizes": [2_000], "repeats": 1})
    print(describe_machine())
    results = {"machine": describe_machine()}
    if args.saved_only and args.json and os.path.exists(args.json):
        with open(args.json) as f:
            results = json.load(f)  # keeps the in-memory table of an earlier run
    if not args.saved_only:
        results.update(results=in_memory_table(args), targets_s=TARGETS_S)
    results.update(saved=saved_table(args), saved_targets=SAVED_TARGETS)
    if args.json:
        write_json(args.json, results)
    return results


def in_memory_table(args: Options) -> list[dict]:
    rows = []
    header = (
        "items      build_s  remove_1_id  remove_1000_ids  remove_1_class  nearest_256 (first call, extra MB)"
        "  select_k1024"
    )
    print(header)
    for size in args.sizes:
        r = bench(size, args.repeats)
        rows.append(r)
        print(
            f"{size:<10d} {r['build_s']:7.2f}  {1e3 * r['remove_1_id']:8.2f} ms  {1e3 * r['remove_1000_ids']:11.2f} ms"
            f"  {1e3 * r['remove_1_class']:11.1f} ms  {r['nearest_256']:7.3f} s ({r['nearest_256_first_call']:.3f} s,"
            f" {r['nearest_peak_extra_mb']:5.0f} MB)  {1e3 * r['select_k1024']:9.2f} ms"
        )
    largest = rows[-1]
    print(f"\nat {largest['items']} items, time / target (<= 1 meets the target):")
    for key, target in TARGETS_S.items():
        print(f"  {key:<16s} {largest[key] / target:6.3f}")
    return rows


def saved_table(args: Options) -> list[dict]:
    print("\nsaved banks; load and removals each in a fresh process: seconds after its imports (CPU seconds),")
    print("resident MB (after imports -> peak) and MB the removal wrote")
    saved = []
    for size in args.sizes:
        r = bench_saved(size)
        saved.append(r)
        load, one, many = r["load"], r["remove_1"], r["remove_1000"]
        print(
            f"{size:<10d} data {r['data_mb']:6.0f} MB  save {r['save_s']:5.2f} s  load {load['seconds']:5.2f} s "
            f"({load['cpu_s']:5.2f}), {load['baseline_mb']:5.0f} -> {load['peak_mb']:5.0f} MB  remove 1: "
            f"{one['seconds']:5.2f} s ({one['cpu_s']:5.2f}), {one['written_mb']:6.1f} MB written, peak "
            f"{one['peak_mb']:5.0f} MB  remove 1,000: {many['seconds']:5.2f} s, {many['written_mb']:6.1f} MB"
        )
    ratios = saved_ratios(saved[-1])
    print(f"\nat {saved[-1]['items']} items, value / target (<= 1 meets the target):")
    for key, target in SAVED_TARGETS.items():
        print(f"  {key:<28s} {ratios[key]:8.3f} / {target:<5g} = {ratios[key] / target:6.3f}")
    return saved


if __name__ == "__main__":
    main()
