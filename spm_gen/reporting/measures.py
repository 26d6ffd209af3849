"""What a record's numbers are: each `Measure` declares its key in the records, its column title, its unit,
which way is better and (where a driver builds records from a list of measures) how its value is computed,
once; a table is a list of measures, rendered from the same records the json holds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Measure:
    key: str  # the record's key
    title: str
    unit: str | None = None  # "%", "s", ...; None: a count, a ratio or a name
    better: Literal["lower", "higher"] | None = None
    fmt: str = ".4g"  # how a float is shown
    of: Callable[[Any], Any] | None = None  # its value from what a driver measures (its records' builder)

    @property
    def header(self) -> str:
        unit = f" ({self.unit})" if self.unit else ""
        arrow = {"lower": " ↓", "higher": " ↑", None: ""}[self.better]
        return self.title + unit + arrow

    def cell(self, value) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:{self.fmt}}"
        return str(value)


def plain(*keys: str) -> list[Measure]:
    """Columns titled by their keys (a benchmark's own table of settings and numbers)."""
    return [Measure(key, key) for key in keys]


MODEL = Measure("model", "model")
PHASE = Measure("phase", "phase")
PROTOCOL = Measure("protocol", "protocol")
GUIDANCE = Measure("guidance_scale", "guidance w")
SECONDS = Measure("seconds", "time", "s")
# the report's
FID_REMAINING_CLASSES = Measure("fid_remaining", "FID (remaining classes)", better="lower")
FID_ORACLE = Measure("fid_oracle", "FID_O", better="lower")
UA = Measure("ua", "UA", "%", "higher")
MEMORIZATION_RATE = Measure("memorization_rate", "memorization rate")
NEAR_COPIES = Measure("near_copies", "near-copies of removed")
REMOVAL_S = Measure("removal_s", "removal time", "s")
# the memorization regime's (`regime_record`)
NEAR_COPIES_OF_REMOVED = Measure("near_copies_of_removed", "near-copies of removed")
EXTRACTION_SHARE = Measure("extraction_share", "extraction share")
FID_REMAINING_IMAGES = Measure("fid_remaining", "FID (remaining images)", better="lower")

REPORT_TABLE = [MODEL, GUIDANCE, FID_REMAINING_CLASSES, FID_ORACLE, UA, MEMORIZATION_RATE, NEAR_COPIES, REMOVAL_S]
REGIME_TABLE = [MODEL, PHASE, NEAR_COPIES_OF_REMOVED, MEMORIZATION_RATE, EXTRACTION_SHARE, FID_REMAINING_IMAGES]


def table(rows: list[dict], measures: list[Measure]) -> str:
    """A markdown table: one column per measure, one line per row (a missing number: n/a)."""
    lines = ["| " + " | ".join(m.header for m in measures) + " |", "|" + "---|" * len(measures)]
    for row in rows:
        lines.append("| " + " | ".join(m.cell(row.get(m.key)) for m in measures) + " |")
    return "\n".join(lines)


def units(measures: list[Measure]) -> dict[str, str]:
    """The unit of each measure that has one, by key (for a json beside the records)."""
    return {m.key: m.unit for m in measures if m.unit}
