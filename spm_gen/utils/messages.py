"""Error-message pieces shared by the memory bank and the command line's early checks (light: no torch)."""

from __future__ import annotations

from collections.abc import Sequence


def preview(values: Sequence, limit: int = 10) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:limit])
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return f"[{shown}{more}]"


def check_labels_known(wanted: Sequence[int], present: Sequence[int]) -> None:
    """Raises ValueError naming the labels of `wanted` that no item has, and the labels that items have."""
    unknown = sorted(set(wanted) - set(present))
    if unknown:
        raise ValueError(
            f"Unknown labels (no item has them): {unknown}; the labels present: {preview(sorted(set(present)), 20)}; "
            "the memory bank is unchanged"
        )
