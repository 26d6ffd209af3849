"""Load on `spm-gen serve` (loopback only, bounded): concurrent generations while removals arrive.

1. Load: a tiny untrained SPM (configs/tiny.yaml, 8x8) whose memory holds `--per-class` synthetic images of
   each class; `--clients` threads, each from its own loopback address (127.0.0.10 and up, as distinct users
   are), generate without pause (4 samples of one class, reading the whole class, 5 DDIM steps) while one
   removal of one id arrives every `--remove-every` seconds, for `--seconds` (at most 60). Counted: requests
   served, errors (any answer but 200, refusals included), and stale reads: generations *sent after* a
   removal's response that read one of its ids. Latency p50 / p99 of generate, remove and /health (polled
   every 0.25 s); the server's peak resident memory.
2. Hostile: the same load beside a hostile mix from other addresses (`--flood` threads generating without
   pause and ignoring Retry-After from one address; one thread cycling through oversized uploads with and
   without the token, a batch of 100,000 labels, a json body above 1 MiB, decompression bombs of 8,192^2 and
   16,384^2 pixels, wrong tokens), on a server started with `--max-upload-bytes 1 MiB` and
   `--max-generations-per-client 2`. Every hostile answer is checked against the statuses it may get
   (`HOSTILE_EXPECTED`); the targets (`TARGETS`, fixed before the first hostile run) are 0 errors and 0 stale
   reads for the well-behaved clients, /remove p99 under 1 s, 0 unexpected hostile answers, and the
   server's peak memory within 64 MB of the plain load's.
3. kill -9 during a removal, `--kill-trials` times at spread delays, then a restart: the folder loads
   (verified), a committed removal left no byte of its image anywhere under memory_bank/, and the server
   answers.
4. `/remove` of one id on a bank of `--big-items` items (warm: the first removal is not counted).

    python benchmarks/serve_load.py --json benchmarks/serve_load_cpu.json
    python benchmarks/serve_load.py --tiny      # a few seconds of each part (the test)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import httpx
import torch
from diffusers import DDIMScheduler

from spm_gen import MemoryBank, SPMDiffusionPipeline
from spm_gen.training.config import build_unet
from spm_gen.utils.benchmarking import BenchmarkOptions, describe_machine, parse_options, synthetic_images, write_json
from spm_gen.utils.dataclass_options import option

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostile_clients import UPLOAD_LIMIT, HostileMix  # noqa: E402

TOKEN = "serve-load-benchmark"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# the hostile part's targets, fixed before its first run: upper bounds (memory: above the plain load's peak)
TARGETS = {"errors": 0, "stale_reads": 0, "remove_p99_s": 1.0, "hostile_unexpected": 0, "peak_memory_growth_mb": 64}


def save_model(folder: str, per_class: int, classes: int = 10) -> None:
    unet = build_unet("configs/tiny.yaml")
    cfg = unet.config
    bank = MemoryBank.from_images(
        *synthetic_images((cfg.in_channels, cfg.sample_size, cfg.sample_size), per_class, classes)
    )
    SPMDiffusionPipeline(unet, DDIMScheduler(num_train_timesteps=1000), bank).save_pretrained(folder)


class Server:
    """`spm-gen serve FOLDER [FLAGS]` in its own process on a free loopback port."""

    def __init__(self, folder: str, flags: tuple[str, ...] = ()) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "SPM_GEN_TOKEN": TOKEN, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        command = [sys.executable, "-m", "spm_gen.cli", "serve", folder, "--port", str(self.port), *flags]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def client(self, address: str = "127.0.0.1") -> httpx.Client:
        """An HTTP client of this server whose connections come from `address` (a loopback one)."""
        transport = httpx.HTTPTransport(local_address=address)
        return httpx.Client(base_url=self.url, timeout=120, transport=transport)

    def peak_memory_mb(self) -> float | None:
        """The server process's peak resident memory so far (Linux: VmHWM), in MB."""
        try:
            with open(f"/proc/{self.process.pid}/status") as f:
                line = next(line for line in f if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            return None
        return int(line.split()[1]) / 1024

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(60)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()  # also when the part failed: no server is left behind


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def load_part(args: Options, folder: str) -> dict:
    with Server(folder) as server:
        return _load(args, server, threading.Event())


def hostile_part(args: Options, folder: str, plain: dict) -> dict:
    """The load beside the hostile mix, on a server with a 1 MiB upload limit and 2 generations per client;
    `plain`: the load part's result (its peak memory is the bound's base)."""
    flags = ("--max-upload-bytes", str(UPLOAD_LIMIT), "--max-generations-per-client", "2")
    with Server(folder, flags) as server:
        mix, stop = HostileMix(server.client, TOKEN), threading.Event()
        load = _load(args, server, stop, mix.threads(stop, args.flood))
    result = {"flood_threads": args.flood, "well_behaved": load, "hostile": mix.summary()}
    base, peak = plain["server_peak_memory_mb"], load["server_peak_memory_mb"]
    result["peak_memory_growth_mb"] = None if base is None or peak is None else peak - base
    measured = {
        "errors": load["errors"],
        "stale_reads": load["stale_reads"],
        "remove_p99_s": load["remove_p99_s"],
        "hostile_unexpected": result["hostile"]["unexpected"],
        "peak_memory_growth_mb": result["peak_memory_growth_mb"],
    }
    result["targets"] = {
        name: {
            "target": bound,
            "measured": measured[name],
            "met": measured[name] is not None and measured[name] <= bound,
        }
        for name, bound in TARGETS.items()
    }
    return result


def _load(args: Options, server: Server, stop: threading.Event, hostile: list[threading.Thread] = ()) -> dict:
    """The well-behaved load on `server` until `args.seconds` pass, beside the `hostile` threads (started with
    it; they end when `stop` is set)."""
    ids_by_class = {c: [str(i) for i in range(c, 10 * args.per_class, 10)] for c in range(10)}
    generations, removals, health, errors = [], [], [], []

    def client(seed: int) -> None:
        rng, http = random.Random(seed), server.client(f"127.0.0.{10 + seed}")
        while not stop.is_set():
            label = rng.randrange(10)
            body = {"class_labels": [label] * 4, "num_inference_steps": 5, "seed": rng.randrange(2**31)}
            sent = time.monotonic()
            try:
                response = http.post("/generate", json=body)
            except httpx.HTTPError as e:
                errors.append(f"generate: {e!r}")
                continue
            if response.status_code != 200:
                errors.append(f"generate {response.status_code}: {response.text[:200]}")
                continue
            read = {i for ids in response.json()["memory_ids"] for i in ids}
            generations.append({"sent": sent, "seconds": time.monotonic() - sent, "read": read})

    def remover() -> None:
        http, rng = server.client("127.0.0.5"), random.Random(1)
        while not stop.wait(args.remove_every):
            label = rng.randrange(10)
            item = ids_by_class[label].pop(rng.randrange(len(ids_by_class[label])))
            sent = time.monotonic()
            response = http.post("/remove", headers=AUTH, data={"ids": [item], "reason": "load"})
            answered = time.monotonic()
            if response.status_code != 200:
                errors.append(f"remove {response.status_code}: {response.text[:200]}")
                continue
            removals.append({"id": item, "answered": answered, "seconds": answered - sent})

    def health_poller() -> None:
        http = server.client("127.0.0.6")
        while not stop.wait(0.25):
            sent = time.monotonic()
            response = http.get("/health")
            if response.status_code != 200:
                errors.append(f"health {response.status_code}: {response.text[:200]}")
            health.append(time.monotonic() - sent)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    threads += [threading.Thread(target=remover), threading.Thread(target=health_poller), *hostile]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    stale = sum(1 for g in generations for r in removals if r["answered"] < g["sent"] and r["id"] in g["read"])
    after = sum(1 for g in generations if any(r["answered"] < g["sent"] for r in removals))
    gen_s, rem_s = [g["seconds"] for g in generations], [r["seconds"] for r in removals]
    return {
        "seconds": elapsed,
        "clients": args.clients,
        "generations": len(generations),
        "removals": len(removals),
        "errors": len(errors),
        "error_examples": errors[:5],
        "generations_after_a_removal": after,
        "stale_reads": stale,
        "generate_p50_s": percentile(gen_s, 0.5),
        "generate_p99_s": percentile(gen_s, 0.99),
        "remove_p50_s": percentile(rem_s, 0.5),
        "remove_p99_s": percentile(rem_s, 0.99),
        "health_p99_s": percentile(health, 0.99),
        "generations_per_s": len(generations) / elapsed,
        "server_peak_memory_mb": server.peak_memory_mb(),
    }


def image_bytes(bank: MemoryBank, item: str) -> bytes:
    return (bank.get_images([item]) * 255).round().to(torch.uint8).numpy().tobytes()


def folder_bytes(folder: str) -> bytes:
    out = []
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out.append(f.read())
    return b"".join(out)


def kill_part(args: Options, folder: str) -> list[dict]:
    """kill -9 of the server while it removes one id, then a restart."""
    trials = []
    bank_dir = os.path.join(folder, "memory_bank")
    for trial in range(args.kill_trials):
        bank = MemoryBank.from_pretrained(bank_dir)
        item = bank.ids[trial]
        removed_bytes = image_bytes(bank, item)
        server = Server(folder)
        delay = 0.005 + 0.015 * trial  # before, during and after the removal's tens of milliseconds
        threading.Thread(
            target=lambda url=server.url, i=item: _quiet_post(url + "/remove", data={"ids": [i]}), daemon=True
        ).start()
        time.sleep(delay)
        server.stop(signal.SIGKILL)
        with Server(folder) as restarted:
            health = httpx.get(restarted.url + "/health", timeout=30).status_code
        loaded = MemoryBank.from_pretrained(bank_dir)  # verified (every hash and digest): raises if it does not load
        committed = item not in loaded
        left = committed and removed_bytes in folder_bytes(bank_dir)
        trials.append({"delay_s": delay, "committed": committed, "removed_bytes_on_disk": left, "health": health})
    return trials


def _quiet_post(url: str, data: dict) -> None:
    try:
        httpx.post(url, headers=AUTH, data=data, timeout=30)
    except httpx.HTTPError:
        pass  # the server is killed under it


def big_part(args: Options, folder: str) -> dict:
    seconds = []
    with Server(folder) as server:
        for i in range(args.big_removals + 1):
            start = time.monotonic()
            item = str((args.big_items // (args.big_removals + 1)) * i + 7)  # in different shards
            response = httpx.post(server.url + "/remove", headers=AUTH, data={"ids": [item]}, timeout=120)
            if response.status_code != 200:
                raise RuntimeError(response.text)
            seconds.append(time.monotonic() - start)
        items = httpx.get(server.url + "/health", timeout=30).json()["items"]
    warm = seconds[1:]
    return {
        "items": items,
        "removals": args.big_removals,
        "first_s": seconds[0],
        "warm_s": warm,
        "warm_max_s": max(warm),
    }


@dataclass
class Options(BenchmarkOptions):
    seconds: float = option(45.0, help="the load run (at most 60)")
    clients: int = option(8, help="well-behaved client threads")
    remove_every: float = option(2.0, help="seconds between removals during the load")
    per_class: int = option(100, help="memory items of each of the 10 classes")
    flood: int = option(16, help="hostile threads generating without pause")
    kill_trials: int = option(5, help="kill -9 trials during a removal")
    big_items: int = option(1_000_000, help="items of the big bank (removal time at scale)")
    big_removals: int = option(5, help="removals timed on the big bank")


def main(argv: list[str] | None = None) -> dict:
    tiny = {"seconds": 4.0, "clients": 2, "remove_every": 1.0, "per_class": 20, "flood": 4}
    args = parse_options(Options, argv, __doc__, tiny | {"kill_trials": 2, "big_items": 2_000, "big_removals": 2})
    if not 0 < args.seconds <= 60:
        raise SystemExit(f"--seconds must be in (0, 60], got {args.seconds}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        folder = os.path.join(work, "model")
        save_model(folder, args.per_class)
        load = load_part(args, folder)
        print(json.dumps(load), flush=True)
        shutil.rmtree(folder)
        save_model(folder, args.per_class)  # the same bank again, its removals undone
        hostile = hostile_part(args, folder, load)
        print(json.dumps(hostile), flush=True)
        kills = kill_part(args, folder)
        print(json.dumps(kills), flush=True)
        shutil.rmtree(folder)
        save_model(folder, args.big_items // 10)
        big = big_part(args, folder)
        print(json.dumps(big), flush=True)
    result = {"machine": describe_machine(), "date": time.strftime("%Y-%m-%d"), "settings": vars(args)}
    result.update(load=load, hostile=hostile, kill_9=kills, big_bank_remove=big, seconds=time.monotonic() - started)
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
