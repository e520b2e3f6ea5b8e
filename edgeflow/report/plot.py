"""Accuracy against p50 latency, one point per variant; estimated points drawn hollow."""

from __future__ import annotations

from pathlib import Path

from edgeflow.io import atomic_path
from edgeflow.report.schema import Report


def plot_accuracy_latency(report: Report, *, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    for variant in report.variants:
        style = {"marker": "o", "s": 60}
        if not variant.measured:
            style.update(facecolors="none", edgecolors="C1")
        axes.scatter(variant.latency_ms.p50, 100 * variant.accuracy.top1, **style)
        label = f"{variant.name}{' (estimated)' if not variant.measured else ''}"
        axes.annotate(
            label,
            (variant.latency_ms.p50, 100 * variant.accuracy.top1),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
        )
    axes.set_xlabel(f"p50 latency on {report.device['name']} (ms, batch 1)")
    axes.set_ylabel(f"test top-1 (%) on {report.data['name']}")
    axes.set_title(f"{report.model.name} at {report.model.resolution} px")
    axes.grid(alpha=0.3)
    axes.set_xlim(left=0)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)
