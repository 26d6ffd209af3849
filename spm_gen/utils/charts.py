"""Charts as PNG (beside utils/images.py's grids): the nearest-distance histograms of the memorization
measures."""

from __future__ import annotations

import os

import torch


def save_distance_histogram(
    distances: dict[str, torch.Tensor],
    path: str,
    title: str = "",
    xlabel: str = "distance to the nearest training image (RMS pixel difference)",
    threshold: float | None = None,
) -> str:
    """Overlaid histograms of nearest-neighbour distances (one per entry), as a PNG; `threshold` draws a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    values = [v.flatten().float() for v in distances.values()]
    top = max(float(v.max()) for v in values if len(v)) if any(len(v) for v in values) else 1.0
    bins = torch.linspace(0, top, 41).tolist()
    for name, v in zip(distances, values):
        ax.hist(v.tolist(), bins=bins, histtype="step", linewidth=1.5, label=name)
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"near-copy threshold {threshold}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
