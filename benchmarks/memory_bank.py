"""Memory bank timings on banks of 10^4, 10^5 and 10^6 items (1x8x8 images, 512-d embeddings).

Prints: remove 1 id, remove 1,000 ids, remove one class (of 10), `nearest` for 256 queries, `select` k=1024.
Targets on a 2-core CPU: remove 1 id from 10^6 <= 100 ms; 1,000 ids <= 1 s; nearest (256 x 10^6 x 512) <= 2 s.

    python benchmarks/memory_bank.py [--sizes 10000 100000 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from spm_gen import MemoryBank
from spm_gen.utils.resources import peak_mb, reset_peak

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
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (size, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.arange(size) % 10
    embeddings = torch.randn(size, dim, generator=g)
    start = time.perf_counter()
    bank = MemoryBank.from_images(images, labels, embeddings=embeddings)
    build_s = time.perf_counter() - start
    del images, embeddings
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
    results["select_k1024"] = _time(lambda: bank.select(3, 1024, generator=torch.Generator().manual_seed(0)), repeats)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
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
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": rows, "targets_s": TARGETS_S}, f, indent=2)


if __name__ == "__main__":
    main()
