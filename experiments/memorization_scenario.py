"""The memorization scenario: do samples copy particular images, and does removal stop it?

(a) Trained-on duplicates: some training images appear many times in the training data (so in the SPM's
    memory too). Near-copies of them in samples of the SPM before and after removing every copy from its
    memory (by content hash), and of the parametric twin before and after gradient ascent on them.
(b) Memory-only images: images added to a trained SPM's memory (`MemoryBank.add`, several copies each),
    so no parameter ever saw them. Near-copies before and after removal, and in a pipeline whose memory
    never held them (equal to "after", sample for sample: removal is exact).

Each target's class is sampled `per_target` times with the same seeds in every measurement.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from PIL import Image

from spm_gen.data import ImageDataset
from spm_gen.memory.bank import MemoryBank
from spm_gen.metrics.memorization import NEAR_COPY_RMS, count_within, rms_distances
from spm_gen.reporting.comparison import Comparison, ComparisonResult, SamplingPlan, TwinBaseline, run_comparison
from spm_gen.reporting.pictures import save_removed_gallery
from spm_gen.reporting.report_rows import RemovedData
from spm_gen.reporting.roles import BEFORE_AFTER, Role
from spm_gen.reporting.sampling_settings import SamplingSettings
from spm_gen.unlearning.twin import TwinUnlearning, forget_and_remain
from spm_gen.utils.dataclass_options import option

DUPLICATES_NAMES = {Role.SPM_BEFORE: "SPM before", Role.SPM_AFTER: "SPM after removal", Role.TWIN_BEFORE: "twin before"}
MEMORY_ONLY_NAMES = {
    Role.SPM_BEFORE: "SPM with them in memory",
    Role.SPM_AFTER: "SPM after removal",
    Role.NEVER_ADDED: "SPM that never held them",
}


@dataclass
class ScenarioSettings(SamplingSettings):
    per_target: int = option(50, help="samples of each target's class")
    threshold: float = option(NEAR_COPY_RMS, help="near-copy RMS pixel distance")
    num_inference_steps: int = option(50, help="DDIM steps", flag="--inference-steps", kw_only=True)
    guidance_scale: float = option(0.0, help="guidance w of every model", kw_only=True)
    memory_size: int | None = option(64, help="memory items read per class", kw_only=True)
    twin: TwinUnlearning = field(default_factory=TwinUnlearning)  # as in the report (--twin-method, ...)


def write_duplicated_folder(dataset: ImageDataset, ids: list[str], copies: int, root: str) -> list[str]:
    """Writes `dataset` as an image folder (`root/<label>/<id>.png`) with `copies` copies of each of `ids`
    (the original plus `copies - 1` files `<id>_copy<k>.png`). Returns the folder ids of the originals."""
    if copies < 1:
        raise ValueError(f"copies must be at least 1, got {copies}")
    unknown = sorted(set(ids) - set(dataset.ids))
    if unknown:
        raise ValueError(f"ids not in the dataset: {unknown[:5]}")
    wanted = set(ids)
    folder_ids = {}
    for image, label, item in zip(dataset.images, dataset.labels.tolist(), dataset.ids):
        os.makedirs(os.path.join(root, str(label)), exist_ok=True)
        array = image.permute(1, 2, 0).numpy()
        picture = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
        picture.save(os.path.join(root, str(label), f"{item}.png"))
        folder_ids[item] = f"{label}/{item}.png"
        for k in range(1, copies if item in wanted else 1):
            picture.save(os.path.join(root, str(label), f"{item}_copy{k}.png"))
    return [folder_ids[i] for i in ids]


def sampling_plan(labels: torch.Tensor, settings: ScenarioSettings, folder: str) -> SamplingPlan:
    """`per_target` samples of each target's class; model `role`'s samples go to `folder/<role>`."""
    return SamplingPlan([int(label) for label in labels for _ in range(settings.per_target)], folder, settings)


def count_near_copies(result: ComparisonResult, targets: torch.Tensor, threshold: float) -> dict:
    """For every run (by role): the number of its samples within `threshold` of each target, and the distance
    of each target's nearest sample (under "nearest_distance")."""
    counts: dict = {"nearest_distance": {}}
    for role, run in result.runs.items():
        distances = rms_distances(targets, run.generations.images)
        counts[role] = count_within(distances, threshold).tolist()
        counts["nearest_distance"][role] = distances.min(dim=1).values.tolist()
    return counts


def duplicates_case(spm, twin, target_ids: list[str], settings: ScenarioSettings, out: str) -> dict:
    """Case (a) on an SPM and a twin trained on data where `target_ids` are duplicated (the SPM's memory
    holds every copy). The SPM loses every copy (matched by content hash); the twin runs `settings.twin`."""
    bank: MemoryBank = spm.memory_bank
    targets, labels = bank.get_images(target_ids).cpu(), bank.get_labels(target_ids)
    hashes = bank.get_hashes(target_ids)
    _, remain = forget_and_remain(bank, bank.resolve_ids(hashes=hashes))  # the training set without any copy
    forget = ImageDataset(targets, labels, target_ids)
    comparison = Comparison(
        spm,
        {"hashes": hashes},
        "memorization scenario (a)",
        twin=TwinBaseline(twin, forget, remain, {Role.TWIN_AFTER: settings.twin}),
        names={**DUPLICATES_NAMES, Role.TWIN_AFTER: f"twin after {settings.twin.title}"},
    )
    compared = run_comparison(comparison, sampling_plan(labels, settings, out))
    result = {
        "targets": target_ids,
        "labels": labels.tolist(),
        **count_near_copies(compared, targets, settings.threshold),
    }
    result["copies_removed"], result["removal_s"] = len(compared.receipt.removed_ids), compared.receipt.duration_s
    result["twin_unlearning_s"] = compared[Role.TWIN_AFTER].seconds
    removed = RemovedData(target_ids, targets, labels, [])
    for tag, (before_role, after_role) in BEFORE_AFTER.items():
        before, after = compared[before_role].generations, compared[after_role].generations
        save_removed_gallery(removed, before, after, os.path.join(out, f"gallery_{tag}.png"), count=len(target_ids))
    return result


def memory_only_case(
    spm, never, images: torch.Tensor, labels: torch.Tensor, copies: int, settings: ScenarioSettings, out: str
) -> dict:
    """Case (b): `copies` copies of each of `images` `(T, C, H, W)` added to `spm`'s memory after training,
    then removed. `never` is the same pipeline, loaded separately, whose memory never held them."""
    ids = spm.memory_bank.add(images.repeat_interleave(copies, 0), labels.repeat_interleave(copies))
    comparison = Comparison(
        spm, {"ids": ids}, "memorization scenario (b)", oracles={Role.NEVER_ADDED: never}, names=MEMORY_ONLY_NAMES
    )
    compared = run_comparison(comparison, sampling_plan(labels, settings, out))
    result = {
        "labels": labels.tolist(),
        "copies_added": len(ids),
        **count_near_copies(compared, images, settings.threshold),
    }
    result["removal_s"] = compared.receipt.duration_s
    after, never_gen = compared[Role.SPM_AFTER].generations, compared[Role.NEVER_ADDED].generations
    result["after_equals_never_added"] = torch.equal(after.images, never_gen.images)
    removed = RemovedData([f"memory-only {i}" for i in range(len(images))], images, labels, [])
    before = compared[Role.SPM_BEFORE].generations
    save_removed_gallery(removed, before, after, os.path.join(out, "gallery_memory_only.png"), count=len(images))
    return result
