"""`report.md`: one table of the numbers, the pictures, the settings and what each metric means."""

from __future__ import annotations

import os

from ..utils.atomic import atomic_write_text
from .measures import REGIME_TABLE, REPORT_TABLE, table
from .roles import Role

METRICS = """\
- **FID (remaining classes)**: Fréchet distance between generations of the classes that were not removed and
  the training images of those classes, in the judge classifier's feature space (clean-fid); unlearning
  should not raise it.
- **FID_O**: the same distance to the generations of the oracle retrained without the removed data; lower
  means closer to a model that never saw it.
- **UA**: 100 x (1 - the judge's accuracy on generations of the removed class); high after forgetting a class.
- **Memorization rate** (Gu et al.): the share of generations whose nearest training image is closer than a
  third of the distance to the second nearest (pixel space).
- **Near-copies of removed**: generations within {threshold} RMS pixel distance of some removed image.
- **Removal time**: memory deletion for the SPM; the unlearning method's run time for the twin.
"""


def sanity_warnings(rows: list[dict]) -> list[str]:
    """Numbers that look like a broken model or judge rather than a result."""
    warnings = []
    for row in rows:
        name = row["model"]
        if "before" in name and row.get("ua") == 100:
            warnings.append(
                f"{name}: UA is 100 before the removal: the judge never recognises the removed classes in its "
                "generations (an untrained or broken model, or a judge that does not fit this data)"
            )
        if row.get("fid_remaining") is not None and row["fid_remaining"] > 100:
            warnings.append(
                f"{name}: FID {row['fid_remaining']:.0f} on the remaining classes looks like a broken model"
            )
    return warnings


def conclusion(rows: list[dict]) -> str:
    """The report in one line: what deleting from memory changed for the SPM, beside the oracle and the twin's
    unlearning (rows by their `role`; a number the report did not measure is left out)."""
    by_role = {row["role"]: row for row in rows}
    before, after = by_role[Role.SPM_BEFORE], by_role[Role.SPM_AFTER]

    def change(key: str, title: str, fmt: str) -> str | None:
        if before.get(key) is None or after.get(key) is None:
            return None
        return f"{title} {before[key]:{fmt}} -> {after[key]:{fmt}}"

    parts = [
        change("ua", "UA", ".1f"),
        change("fid_remaining", "FID on the remaining classes", ".3g"),
        change("near_copies", "near-copies of removed images", "d"),
    ]
    line = f"Deleting from the SPM's memory took {1e3 * after['removal_s']:.3g} ms: " + ", ".join(p for p in parts if p)
    oracle = by_role.get(Role.ORACLE)
    if oracle is not None and oracle.get("ua") is not None:
        line += f" (the oracle: UA {oracle['ua']:.1f})"
    twin = by_role.get(Role.TWIN_AFTER)
    if twin is not None:
        numbers = [
            f"{title} {twin[key]:{fmt}}"
            for key, title, fmt in (("ua", "UA", ".1f"), ("fid_remaining", "FID", ".3g"))
            if twin.get(key) is not None
        ]
        line += f". The {twin['model']} took {twin['removal_s']:.3g} s" + (f": {', '.join(numbers)}" if numbers else "")
    return line + "."


def write_report(path: str, summary: dict, pictures: dict[str, list[str]]) -> str:
    """Writes `report.md` next to its pictures (linked relative to it)."""
    base = os.path.dirname(os.path.abspath(path))
    removal = summary["removal"]
    w = summary["config"]["guidance_scale"]
    guidance = "each model's own (its saved default)" if w is None else w
    lines = [
        "# Removal report",
        "",
        f"Removed {removal['num_items']} memory items: classes {removal['classes'] or 'none'}, "
        f"{len(removal['individual_ids'])} individual ids. {summary['config']['num_images']} generations per model "
        f"(classes cycling), {summary['config']['num_inference_steps']} DDIM steps, guidance w {guidance}, "
        f"seed {summary['config']['seed']}; the same seeds before and after.",
        "",
        f"**In one line:** {conclusion(summary['rows'])}",
        "",
        table(summary["rows"], REPORT_TABLE),
        "",
        *[f"**Warning:** {warning}\n" for warning in summary.get("warnings", [])],
        f"<details><summary>The {len(removal['ids'])} removed ids</summary>\n\n{', '.join(removal['ids'])}\n",
        "</details>",
        "",
        "## Pictures",
    ]
    for title, files in pictures.items():
        lines += ["", f"### {title}", ""]
        lines += [f"![{os.path.basename(f)}]({os.path.relpath(f, base)})" for f in files]
    lines += ["", "## Metrics", "", METRICS.format(threshold=summary["config"]["near_copy_threshold"])]
    lines += ["Numbers and settings: `report.json`. Machine: " + summary["machine"], ""]
    atomic_write_text(path, "\n".join(lines))
    return path


def append_memorization_section(path: str, summary: dict, title: str = "Memorization regime") -> str:
    """Appends the memorization regime's table and pictures (`demo_memorization`'s summary) to `report.md`."""
    base = os.path.dirname(os.path.abspath(path))
    settings = summary["settings"]
    removed = ", ".join(
        f"{item} (class {label}, {count} twin near-copies in the benchmark's choice)"
        for (item, count), label in zip(summary["removed"].items(), summary["removed_labels"])
    )
    lines = [
        "",
        f"## {title}",
        "",
        "Models trained long on 100 training images (the digits at 8x8, 10 per class: "
        "configs/digits_memorization.yaml) copy them. Removed: " + removed + ". "
        f"{settings['per_class']} generations of every class per model, {settings['num_inference_steps']} DDIM steps, "
        f"the same seeds for every model; near-copy: within {settings['threshold']} RMS pixel distance; the SPM "
        f"deleted them from its memory in {1e3 * summary['spm_deletion_s']:.2f} ms.",
        "",
        table(summary["records"], REGIME_TABLE),
        "",
        "- **Extraction share**: generations whose Carlini et al. ratio (the distance to the nearest remaining "
        "training image over half the mean distance to the 50 nearest) is below 1/3.",
        "- **Memorization rate** and **FID** are measured against the remaining training images; FID from this "
        "few images is noisy (compare rows, not runs).",
        "",
        *[f"![{os.path.basename(p)}]({os.path.relpath(p, base)})" for p in summary["pictures"]],
        "",
    ]
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path
