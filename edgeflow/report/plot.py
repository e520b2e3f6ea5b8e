"""Accuracy against p50 latency, one point per variant; estimated points drawn hollow."""

from __future__ import annotations

from pathlib import Path

from edgeflow.io import atomic_path
from edgeflow.report.schema import Report


def plot_accuracy_latency(report: Report, *, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    markers = "osD^vP*Xh<>"
    for index, variant in enumerate(report.variants):
        style = {"marker": markers[index % len(markers)], "s": 70, "color": f"C{index % 10}"}
        if not variant.measured:
            style.update(facecolors="none", edgecolors=f"C{index % 10}")
        label = f"{variant.name} ({variant.precision}/{variant.execution_precision})"
        if not variant.measured:
            label += f", {variant.latency_kind}"
        axes.scatter(variant.p50(), 100 * variant.accuracy.top1, label=label, **style)
    latencies = [variant.p50() for variant in report.variants]
    if latencies and max(latencies) > 4 * min(latencies):
        axes.set_xscale("log")  # torch eager is often several times slower than the runtimes
        from matplotlib.ticker import FormatStrFormatter

        axes.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        axes.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    axes.legend(fontsize=8, loc="best")
    axes.set_xlabel(f"p50 latency on {report.device['name']} (ms, batch 1)")
    axes.set_ylabel(f"test top-1 (%) on {report.data['name']}")
    axes.set_title(f"{report.model.name} at {report.model.resolution} px")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)


def sensitivity_plot_name(variant: str) -> str:
    return f"sensitivity_{variant}.png"


def plot_sensitivity(mixed, *, title: str, path: Path) -> None:
    """Each unit (weighted layer, gate): the KL divergence to the float file it adds when INT8 alone
    against the latency it costs kept alone in float, both measured through the runtime; the units mixed
    precision kept in float in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sensitivity = mixed.sensitivity
    layers = sensitivity.layers
    kept = set(mixed.float_layers)
    figure, axes = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for chosen, color, label in ((False, "C0", "INT8"), (True, "C3", "kept in float")):
        points = [layer for layer in layers if (layer.name in kept) == chosen]
        if points:
            axes.scatter(
                [100 * layer.float_cost for layer in points],
                [1000 * sensitivity.damage(layer) for layer in points],
                s=18,
                color=color,
                label=label,
            )
    for layer in sorted(layers, key=lambda layer: -sensitivity.damage(layer))[:6]:
        axes.annotate(layer.label(), (100 * layer.float_cost, 1000 * sensitivity.damage(layer)), fontsize=7)
    axes.axvline(0, color="0.8", linewidth=0.8)
    axes.set_xlabel("latency cost of keeping it alone in float (% of all-INT8 p50, measured)")
    axes.set_ylabel("KL to the float file added when INT8 alone (milli-nats, holdout)")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)
