"""Complete forgetting: training protocols that keep instance detail in memory, measured against the oracle.

A protocol is a set of training overrides of the SPM's recipe (`PROTOCOLS`). Each is trained on the
memorization regime's 100 images; `R` removed images are chosen among those the twin copies (for a
memory-only protocol, among its memory-only items: images no parameter was trained to denoise); then the
regime's measurement (`memorization_regime.RegimeMeasurements`) runs before and after deleting `R` from
memory, and on the protocol's oracle (the same protocol retrained without `R`).

Every setting of the experiment (the protocols, the thresholds, seeds and sample counts) is fixed here and in
`RegimeSettings` before any model is trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..memory.bank import MemoryBank
from .generations import Generations
from .memorization_regime import RegimeSettings, choose_removed


@dataclass(frozen=True)
class Protocol:
    """A training design: its config overrides, and whether `R` must be among the memory-only items."""

    name: str
    overrides: tuple[str, ...]
    memory_only: bool = False
    description: str = ""


PROTOCOLS = {
    p.name: p
    for p in (
        Protocol("baseline", (), description="the shipped recipe (the paper's: own image never in support)"),
        Protocol(
            "memory_only_half",
            ("--memory_only_fraction", "0.5"),
            memory_only=True,
            description="half of every class memory-only (support, never a denoising target); R among them",
        ),
        Protocol(
            "self_below_100",
            ("--self_support", "below_timestep", "--self_support_timestep", "100"),
            description="the query's own image in its support when t < 100",
        ),
        Protocol(
            "self_below_300",
            ("--self_support", "below_timestep", "--self_support_timestep", "300"),
            description="the query's own image in its support when t < 300",
        ),
        Protocol(
            "self_p50",
            ("--self_support", "probability", "--self_support_probability", "0.5"),
            description="the query's own image in its support with probability 0.5 at every t",
        ),
    )
}
ORACLE_PROTOCOLS = ("baseline", "memory_only_half")  # retrained without R (decided before training)


def subset_bank(bank: MemoryBank, ids: list[str]) -> MemoryBank:
    """A new bank of the items `ids` of `bank`, in `bank`'s order."""
    wanted = set(ids)
    keep = [i for i in bank.ids if i in wanted]
    images = (bank.get_images(keep).cpu() * 255).round().to(torch.uint8)
    return MemoryBank.from_images(images, bank.get_labels(keep), keep)


def choose_protocol_removed(
    probe: Generations, training: MemoryBank, candidates: list[str] | None, settings: RegimeSettings
) -> dict[str, int]:
    """`choose_removed` among `candidates` (all training items when None): one image per class, the ones the
    twin's probe samples copy most, with the probe's near-copies of each."""
    pool = training if candidates is None else subset_bank(training, candidates)
    return choose_removed(probe, pool, settings)


def protocol_records(protocol: str, records: list[dict], seconds: dict[tuple[str, str], float | None]) -> list[dict]:
    """The regime's records of one protocol in the benchmark's form: `protocol`, `model`, `phase`, the
    measures, and `seconds`, keyed by (model, phase): what forgetting cost (the deletion, the oracle's
    retraining)."""
    keys = ("model", "phase", "near_copies_of_removed", "memorization_rate", "extraction_share", "fid_remaining")
    extra = ("nearest_removed", "num_images", "sampling_s")
    out = []
    for r in records:
        cost = seconds.get((r["model"], r["phase"]))
        out.append({"protocol": protocol, **{k: r[k] for k in keys}, "seconds": cost, **{k: r[k] for k in extra}})
    return out


def copying_measures(generations: Generations, training: MemoryBank, threshold: float) -> dict:
    """Does a model copy its training images? Gu's rate, and how many samples are near-copies of some training
    image (within `threshold` RMS) and of how many distinct images."""
    from ..metrics.memorization import memorization

    report = memorization(generations.images, training)
    near = report.nearest_distance <= threshold
    return {
        "memorization_rate": report.memorization_rate,
        "near_copy_samples": int(near.sum()),
        "near_copied_images": len({i for i, n in zip(report.nearest_ids, near.tolist()) if n}),
    }


def judge_accuracy(judge, judge_bank, generations: Generations) -> float:
    """The share of generations the judge classifies as the class they were generated for."""
    predicted = judge.predict(generations.images, judge_bank).argmax(1).cpu()
    return float((predicted == generations.labels).float().mean())


OWN_IMAGE_BANDS = ((0, 100), (100, 300), (300, 1000))


@torch.no_grad()
def own_image_effect(pipe, num_train_timesteps: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Does the trained SPM use a training image's own copy in memory? For every memory item, the noise
    prediction error (MSE) at a timestep drawn in each band of `OWN_IMAGE_BANDS`, once reading its class's
    memory with the item itself and once without it (the same noise and timestep). Equal errors: the memory
    path carries the class, not the instance, so instance detail comes from the weights."""
    from diffusers import DDPMScheduler

    from ..memory.readout import MemoryReadout
    from ..utils.images import to_model_range

    scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear")
    unet, bank = pipe.unet.eval(), pipe.memory_bank
    images, labels = bank.get_images().cpu(), bank.labels
    tokens = unet.encode_memory(images, labels)
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for low, high in OWN_IMAGE_BANDS:
        t = torch.randint(low, high, (len(images),), generator=generator)
        noise = torch.randn(images.shape, generator=generator)
        noisy = scheduler.add_noise(to_model_range(images), noise, t)
        errors = {"with_own": 0.0, "without_own": 0.0}
        for i in range(len(images)):
            for mode in errors:
                owner = torch.full((len(images),), -1)
                if mode == "without_own":
                    owner[i] = 1  # private to a query that does not exist: nobody reads it
                readout = MemoryReadout.from_labels(labels[i : i + 1], labels, owner)
                eps = unet(noisy[i : i + 1], t[i : i + 1], labels[i : i + 1], tokens, readout).sample
                errors[mode] += float(((eps - noise[i : i + 1]) ** 2).mean()) / len(images)
        out[f"t {low}-{high}"] = errors
    return out
