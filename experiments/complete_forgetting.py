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

from dataclasses import dataclass, replace
from typing import Any

import torch

from spm_gen.memory.bank import MemoryBank
from spm_gen.metrics.memorization import MemorizationReport
from spm_gen.reporting.generations import Generations
from spm_gen.reporting.measures import MEMORIZATION_RATE, REGIME_TABLE, Measure
from spm_gen.reporting.memorization_regime import REGIME_MEASURES, RegimeSettings, choose_removed


@dataclass(frozen=True)
class Protocol:
    """A training design: its config overrides, and whether `R` must be among the memory-only items."""

    name: str
    overrides: dict[str, Any]
    memory_only: bool = False
    description: str = ""


PROTOCOLS = {
    p.name: p
    for p in (
        Protocol("baseline", {}, description="the shipped recipe (the paper's: own image never in support)"),
        Protocol(
            "memory_only_half",
            {"memory_only_fraction": 0.5},
            memory_only=True,
            description="half of every class memory-only (support, never a denoising target); R among them",
        ),
        Protocol(
            "self_below_100",
            {"self_support": "below_timestep", "self_support_timestep": 100},
            description="the query's own image in its support when t < 100",
        ),
        Protocol(
            "self_below_300",
            {"self_support": "below_timestep", "self_support_timestep": 300},
            description="the query's own image in its support when t < 300",
        ),
        Protocol(
            "self_p50",
            {"self_support": "probability", "self_support_probability": 0.5},
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
    keys = [m.key for m in REGIME_TABLE]
    extra = [m.key for m in REGIME_MEASURES if m.key not in keys]
    out = []
    for r in records:
        cost = seconds.get((r["model"], r["phase"]))
        out.append({"protocol": protocol, **{k: r[k] for k in keys}, "seconds": cost, **{k: r[k] for k in extra}})
    return out


def judge_accuracy(judge, judge_bank, generations: Generations) -> float:
    """The share of generations the judge classifies as the class they were generated for."""
    predicted = judge.predict(generations.images, judge_bank).argmax(1).cpu()
    return float((predicted == generations.labels).float().mean())


@dataclass
class DataRichReference:
    """What the data-rich part measures a model's generations against."""

    training: MemoryBank
    folder: str  # the training images, for FID
    judge: Any  # the judge classifier (None: no FID, no consistency)
    judge_bank: MemoryBank | None
    threshold: float


@dataclass
class DataRichMeasured:
    generations: Generations
    reference: DataRichReference
    report: MemorizationReport  # against the training images


def _data_rich_fid(m: DataRichMeasured) -> float | None:
    from spm_gen.metrics.fid import compute_fid

    if m.reference.judge is None:
        return None
    return compute_fid(m.generations.folder, m.reference.folder, "domain", m.reference.judge)["fid"]


def _consistency(m: DataRichMeasured) -> float | None:
    return judge_accuracy(m.reference.judge, m.reference.judge_bank, m.generations) if m.reference.judge else None


DATA_RICH_MEASURES = [  # does a model copy its training images, and at what quality?
    Measure("fid", "FID (all classes)", better="lower", of=_data_rich_fid),
    Measure("class_consistency", "class consistency", better="higher", of=_consistency),
    replace(MEMORIZATION_RATE, of=lambda m: m.report.memorization_rate),
    Measure("near_copy_samples", "near-copy samples", of=lambda m: m.report.near_copy_samples(m.reference.threshold)),
    Measure(
        "near_copied_images", "near-copied images", of=lambda m: m.report.near_copied_images(m.reference.threshold)
    ),
]


def data_rich_record(generations: Generations, reference: DataRichReference) -> dict:
    """The values of `DATA_RICH_MEASURES` for one model's generations."""
    from spm_gen.metrics.memorization import memorization

    measured = DataRichMeasured(generations, reference, memorization(generations.images, reference.training))
    return {m.key: m.of(measured) for m in DATA_RICH_MEASURES}


OWN_IMAGE_BANDS = ((0, 100), (100, 300), (300, 1000))


def own_image_groups(pipe) -> tuple[list[list[str]], list[list[str]]]:
    """For every memory item, what it reads with its own image and without it: its class's memory (the
    paper's readout), or for a pipeline that reads anchors the item and its nearest items of the class
    against its nearest others (`default_memory_size` items each)."""
    bank = pipe.memory_bank
    ids, labels = bank.ids, bank.labels.tolist()
    if pipe.config.default_memory_retrieval != "anchor":
        members = {c: [i for i, lab in zip(ids, labels) if lab == c] for c in set(labels)}
        with_own = [members[c] for c in labels]
        return with_own, [[m for m in members[c] if m != i] for i, c in zip(ids, labels)]
    k = pipe.config.default_memory_size
    images = bank.get_images()
    with_own, without_own = [], []
    for j, (i, c) in enumerate(zip(ids, labels)):
        others = [m for m in bank.nearest_images(images[j : j + 1], k + 1, label=c).ids[0] if m != i]
        with_own.append([i, *others[: k - 1]])
        without_own.append(others[:k])
    return with_own, without_own


@torch.no_grad()
def own_image_effect(pipe, num_train_timesteps: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Does the trained SPM use a training image's own copy in memory? For every memory item, the noise
    prediction error (MSE) at a timestep drawn in each band of `OWN_IMAGE_BANDS`, once reading what it reads
    with the item itself and once without it (`own_image_groups`; the same noise and timestep), all items in
    one batch. Equal errors: the memory path carries the class, not the instance, so instance detail comes
    from the weights."""
    from diffusers import DDPMScheduler

    from spm_gen.memory.readout import MemoryReadout
    from spm_gen.utils.images import to_model_range

    scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear")
    unet, bank = pipe.unet.eval(), pipe.memory_bank
    images, labels = bank.get_images().cpu(), bank.labels
    tokens = unet.encode_memory(images, labels)
    position = {item: j for j, item in enumerate(bank.ids)}
    generator = torch.Generator().manual_seed(seed)
    groups = dict(zip(("with_own", "without_own"), own_image_groups(pipe)))
    out = {}
    for low, high in OWN_IMAGE_BANDS:
        t = torch.randint(low, high, (len(images),), generator=generator)
        noise = torch.randn(images.shape, generator=generator)
        noisy = scheduler.add_noise(to_model_range(images), noise, t)
        errors = {}
        for mode, read in groups.items():
            readout = MemoryReadout.from_id_groups(read, torch.arange(len(read)), read)
            order = torch.tensor([position[i] for i in readout.ids])
            eps = unet(noisy, t, labels, tokens[order], readout).sample
            errors[mode] = float(((eps - noise) ** 2).mean())
        out[f"t {low}-{high}"] = errors
    return out
