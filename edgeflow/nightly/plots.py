"""The night's plots as SVG: accuracy against latency with the Pareto front, per device; latency and
accuracy of every cell over past nights. Estimated latencies are drawn hollow and say so."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the report calls these plots: a type-only import, not a cycle
    from edgeflow.nightly.report import NightReport


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "edgeflow"  # stable ids: the same night gives the same file
    import matplotlib.pyplot as plt

    return plt


def _svg(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    _pyplot().close(figure)
    return buffer.getvalue()


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both latency (lower) and accuracy (higher), fastest first."""
    front: list[tuple[float, float]] = []
    for latency, accuracy in sorted(points, key=lambda point: (point[0], -point[1])):
        if not front or accuracy > front[-1][1]:
            front.append((latency, accuracy))
    return front


def pareto_svg(report: NightReport, *, device: str) -> bytes:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7.5, 4.5), dpi=100)
    points = []
    cells = [cell for cell in report.cells if cell.device == device and cell.status == "ok" and cell.top1 is not None]
    markers = {"fp32": "o", "fp16": "s", "int8": "D"}
    models = list(dict.fromkeys(cell.model for cell in cells))
    for cell in cells:
        latency = cell.p50_ms if cell.measured else cell.estimate_ms
        if latency is None:
            continue
        color = f"C{models.index(cell.model) % 10}"
        style = {"marker": markers.get(cell.precision, "^"), "s": 70, "color": color}
        if not cell.measured:
            style.update(facecolors="none", edgecolors=color)
        label = f"{cell.model} {cell.precision}" + ("" if cell.measured else " (estimated)")
        axes.scatter(latency, 100 * cell.top1, label=label, **style)
        points.append((latency, 100 * cell.top1))
    front = pareto_front(points)
    if len(front) > 1:
        axes.step([p[0] for p in front], [p[1] for p in front], where="post", color="0.4", lw=1, ls="--",
                  label="Pareto front")  # fmt: skip
    if points:
        axes.legend(fontsize=8, loc="best")
    else:
        axes.text(0.5, 0.5, "no cell ran on this device tonight", ha="center", transform=axes.transAxes)
    axes.set_xlabel(f"p50 latency on {device} (ms, batch 1)")
    axes.set_ylabel("test top-1 (%)")
    axes.set_title(f"{report.label}: accuracy against latency on {device}")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _svg(figure)


def trend_svg(report: NightReport, *, device: str) -> bytes:
    plt = _pyplot()
    figure, (latency_axes, accuracy_axes) = plt.subplots(2, 1, figsize=(7.5, 6), dpi=100, sharex=True)
    # keys are model/device/precision/backend, and a model may be a path with slashes of its own
    series = {key: points for key, points in report.trends.items() if key.rsplit("/", 3)[1] == device}
    nights = sorted({(point.run_id, point.label) for points in series.values() for point in points})
    position = {run_id: index for index, (run_id, _) in enumerate(nights)}
    labels = [label for _, label in nights]
    flagged = {(f.model, f.device, f.precision, f.backend) for f in report.regressions}
    for index, (key, points) in enumerate(series.items()):
        model, _, precision, backend = key.rsplit("/", 3)
        color = f"C{index % 10}"
        timed = [(position[p.run_id], p.p50_ms) for p in points if p.status == "ok" and p.p50_ms is not None]
        scored = [(position[p.run_id], 100 * p.top1) for p in points if p.status == "ok" and p.top1 is not None]
        if timed:
            latency_axes.plot(
                *zip(*timed, strict=True), marker="o", ms=3, color=color, label=f"{model} {precision} ({backend})"
            )
        if scored:
            accuracy_axes.plot(*zip(*scored, strict=True), marker="o", ms=3, color=color)
        if tuple(key.rsplit("/", 3)) in flagged and timed:
            latency_axes.scatter(*timed[-1], s=160, facecolors="none", edgecolors="red", linewidths=2, zorder=5)
    latency_axes.set_ylabel("p50 ms (measured)")
    accuracy_axes.set_ylabel("test top-1 %")
    latency_axes.set_title(f"{device}: the last {len(labels)} night(s) (red ring: flagged tonight)")
    if series:
        latency_axes.legend(fontsize=7, loc="best")
    accuracy_axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    for axes in (latency_axes, accuracy_axes):
        axes.grid(alpha=0.3)
    figure.tight_layout()
    return _svg(figure)
