"""What a search writes: search.json (every iteration and proposal), search.md and the accuracy-latency plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from edgeflow.io import atomic_path, write_json, write_text
from edgeflow.netadapt.state import IterationRecord, SearchState
from edgeflow.profiling import LatencyStats


class PointRecord(BaseModel):
    """A model measured on the device and evaluated on the test split through its runtime."""

    name: str
    kind: str  # start | netadapt | width | resolution
    detail: str = ""
    resolution: int
    artifact: str
    latency_ms: LatencyStats
    measured: bool
    execution_precision: str
    test_top1: float
    params: int
    macs: int


class TableErrors(BaseModel):
    """The lookup table's estimate against whole-model latency measured on the device, per candidate."""

    candidates: int
    within_10_percent: float  # fraction of candidates
    median_abs_error_percent: float
    max_abs_error_percent: float
    errors_percent: list[float]


class SearchReport(BaseModel):
    created: str
    model: str
    arch: str | None
    resolution: int
    device: dict
    backend: str
    data: dict
    config: dict
    oracle: str
    budget_ms: float
    stop_reason: str
    iterations: list[IterationRecord]
    points: list[PointRecord]
    table: TableErrors | None
    oracle_measurements: int
    oracle_seconds: float
    device_measurements: int
    device_seconds: float
    search_seconds: float
    environment: dict

    def point(self, name: str) -> PointRecord:
        return next(point for point in self.points if point.name == name)

    def speedup(self) -> float:
        return self.point("start").latency_ms.p50 / self.point("netadapt").latency_ms.p50

    def width_top1_at(self, latency_ms: float) -> float | None:
        """Test top-1 of the width-multiplier curve at ``latency_ms``, interpolated between its points."""
        widths = sorted(
            (point.latency_ms.p50, point.test_top1) for point in self.points if point.kind in ("width", "start")
        )
        if len(widths) < 2 or not widths[0][0] <= latency_ms <= widths[-1][0]:
            return None
        return float(np.interp(latency_ms, [w[0] for w in widths], [w[1] for w in widths]))


def table_errors(state: SearchState) -> TableErrors | None:
    """Signed percentage errors of the table over every candidate that was also measured whole."""
    pairs = [
        (record.estimate_ms, record.measured_ms)
        for iteration in state.iterations
        for record in iteration.proposals
        if record.estimate_ms is not None and record.measured_ms is not None
    ]
    if state.start_estimate_ms is not None and state.start_measured_ms is not None:
        pairs.append((state.start_estimate_ms, state.start_measured_ms))
    if not pairs:
        return None
    errors = [100 * (estimate - measured) / measured for estimate, measured in pairs]
    absolute = np.abs(errors)
    return TableErrors(
        candidates=len(errors),
        within_10_percent=float(np.mean(absolute <= 10.0)),
        median_abs_error_percent=float(np.median(absolute)),
        max_abs_error_percent=float(absolute.max()),
        errors_percent=[round(error, 2) for error in errors],
    )


def render_markdown(report: SearchReport) -> str:
    start = report.point("start")
    lines = [
        f"# NetAdapt search: {report.model} at {report.resolution} px on {report.device['name']} ({report.backend})",
        "",
        f"Budget {report.budget_ms:.3f} ms (measured start {start.latency_ms.p50:.3f} ms). {report.stop_reason}.",
        f"Oracle: {report.oracle}. Search time {report.search_seconds / 60:.1f} min; "
        f"{report.oracle_measurements} oracle timings ({report.oracle_seconds:.0f} s), "
        f"{report.device_measurements} whole-model timings on the device ({report.device_seconds:.0f} s).",
        "",
        "## Models (measured on the device, test top-1 through its runtime)",
        "",
        "| model | kind | p50 ms | speed-up vs start | test top-1 % | params | MACs |",
        "|---|---|---|---|---|---|---|",
    ]
    for point in report.points:
        lines.append(
            f"| {point.name} {point.detail} | {point.kind} | {point.latency_ms.p50:.3f} | "
            f"{start.latency_ms.p50 / point.latency_ms.p50:.2f}x | {100 * point.test_top1:.2f} | "
            f"{point.params / 1e6:.2f}M | {point.macs / 1e6:.1f}M |"
        )
    lines += [
        "",
        "## Iterations (latency estimated by the oracle and measured on the device; holdout top-1 after "
        "short-term fine-tuning)",
        "",
        "| # | chosen | target ms | estimated ms | measured ms | holdout top-1 % | proposals (skipped) |",
        "|---|---|---|---|---|---|---|",
    ]
    for iteration in report.iterations:
        skipped = sum(1 for record in iteration.proposals if record.skipped)
        lines.append(
            f"| {iteration.index} | {iteration.action.describe()} | {iteration.target_ms:.3f} | "
            f"{iteration.estimate_ms:.3f} | {_ms(iteration.measured_ms)} | {100 * iteration.holdout_top1:.2f} | "
            f"{len(iteration.proposals)} ({skipped}) |"
        )
    if report.table is not None:
        table = report.table
        lines += [
            "",
            f"Lookup table vs measured: {table.candidates} candidates, {100 * table.within_10_percent:.1f}% within "
            f"+-10%, median |error| {table.median_abs_error_percent:.1f}%, max {table.max_abs_error_percent:.1f}%.",
        ]
    lines += ["", "![accuracy vs latency](search.png)", ""]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def plot(report: SearchReport, *, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    styles = {"start": ("k", "o"), "netadapt": ("C3", "*"), "width": ("C0", "s"), "resolution": ("C2", "^")}
    for kind, (color, marker) in styles.items():
        points = sorted((p for p in report.points if p.kind == kind), key=lambda p: p.latency_ms.p50)
        if not points:
            continue
        label = {"width": "width multiplier", "resolution": "resolution multiplier"}.get(kind, kind)
        axes.plot(
            [p.latency_ms.p50 for p in points],
            [100 * p.test_top1 for p in points],
            marker=marker,
            color=color,
            linestyle="-" if len(points) > 1 else "none",
            markersize=11 if kind == "netadapt" else 7,
            label=label,
        )
    axes.set_xlabel(f"p50 latency measured on {report.device['name']} ({report.backend}, ms)")
    axes.set_ylabel(f"test top-1 (%) on {report.data['name']}")
    axes.set_title(f"{report.model} at {report.resolution} px: NetAdapt vs multipliers")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)


def write_search_report(report: SearchReport, *, folder: Path) -> None:
    write_json(folder / "search.json", report.model_dump(mode="json"))
    plot(report, path=folder / "search.png")
    write_text(folder / "search.md", render_markdown(report))
