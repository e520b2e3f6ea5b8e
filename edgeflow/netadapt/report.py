"""What a search writes: search.json (every iteration and proposal), search.md and the accuracy-latency plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from edgeflow.io import atomic_path, write_json, write_text
from edgeflow.latency.steps import ChannelStepStats
from edgeflow.latency.table import TableFit
from edgeflow.netadapt.state import IterationRecord, SearchState, drift_corrected, measured_candidates
from edgeflow.profiling.stats import LatencyStats, MeasuredStats


class PointRecord(MeasuredStats):
    """A model measured on the device and evaluated on the test split through its runtime."""

    name: str
    kind: str  # start | netadapt | width | resolution | magnitude (Torch-Pruning)
    detail: str = ""
    resolution: int
    artifact: str
    latency_ms: LatencyStats  # its own timing loop
    p50_in_turn_ms: float | None = None  # median over rounds in which every point was timed in turn
    rounds_ms: list[float] = []  # the per-round p50s behind it
    test_top1: float

    def p50(self) -> float:
        """The figure models are compared by: timed in turn with the others when that was done."""
        return self.p50_in_turn_ms if self.p50_in_turn_ms is not None else self.latency_ms.p50


class TableErrors(BaseModel):
    """The lookup table's estimate against whole-model latency measured on the device, per candidate.

    The host's speed drifts over minutes on a shared machine, and a table fitted at one moment cannot
    know it; so each candidate is timed in turn with the starting model, and ``errors_percent`` compare
    the estimate with the measurement brought back to the host's speed when the table was fitted
    (measured x start's fitted ms / start timed beside it). ``raw_*`` compare with the timing as taken.
    The starting model itself is left out: the table's scale is fitted on it.

    The estimate is the figure the search decided with: recalibrated (``SearchConfig.recalibrate``), the
    table's figure x the median of measured / table over the models measured in earlier iterations.
    ``table_only_*`` judge the table's own figure, as fitted on the calibration models, the same way.
    """

    candidates: int
    within_10_percent: float  # fraction of candidates
    median_abs_error_percent: float
    max_abs_error_percent: float
    errors_percent: list[float]
    raw_within_10_percent: float
    raw_median_abs_error_percent: float
    raw_errors_percent: list[float]
    table_only_within_10_percent: float | None = None
    table_only_median_abs_error_percent: float | None = None
    table_only_errors_percent: list[float] = []


class SearchReport(BaseModel):
    created: str
    model: str
    arch: str | None
    resolution: int
    device: dict
    backend: str
    target: dict | None = None  # the variant whose file was timed: backend, precision, timing and shipped method
    data: dict
    config: dict
    oracle: str
    budget_ms: float
    start_measured_ms: float  # when the search began (with the table: among its calibration models)
    start_estimate_ms: float  # the oracle's figure for it (the budget's base with --latency-ratio)
    table_fit: TableFit | None = None  # how the lookup table's blocks add up, and its calibration models
    channel_steps: ChannelStepStats | None = None  # the channel step measured on the device, when measured
    stop_reason: str
    iterations: list[IterationRecord]
    points: list[PointRecord]
    table: TableErrors | None
    oracle_measurements: int
    oracle_seconds: float
    oracle_noisy: int = 0  # of the oracle timings, those taken while the device was busy (kept, counted)
    device_measurements: int
    device_seconds: float
    search_seconds: float
    environment: dict

    def point(self, name: str) -> PointRecord:
        return next(point for point in self.points if point.name == name)

    def speedup(self) -> float:
        return self.point("start").p50() / self.point("netadapt").p50()

    def width_top1_at(self, latency_ms: float) -> float | None:
        """Test top-1 of the width-multiplier curve at ``latency_ms``, interpolated between its points."""
        return self.top1_at(latency_ms, kind="width")

    def top1_at(self, latency_ms: float, *, kind: str) -> float | None:
        """Test top-1 of the ``kind`` curve (with the start) at ``latency_ms``, interpolated between its points;
        None when its points do not bracket that latency."""
        curve = sorted((point.p50(), point.test_top1) for point in self.points if point.kind in (kind, "start"))
        if len(curve) < 2 or not curve[0][0] <= latency_ms <= curve[-1][0]:
            return None
        return float(np.interp(latency_ms, [c[0] for c in curve], [c[1] for c in curve]))


def table_errors(state: SearchState) -> TableErrors | None:
    """Signed percentage errors of the table over every candidate that was also measured whole."""
    records = [record for record in measured_candidates(state) if record.estimate_ms is not None]
    if not records or state.start_measured_ms is None:
        return None
    fitted = state.start_measured_ms
    raw = np.array([100 * (record.estimate_ms - record.measured_ms) / record.measured_ms for record in records])
    corrected_ms = [drift_corrected(record, fitted) for record in records]
    errors = np.array([100 * (record.estimate_ms - ms) / ms for record, ms in zip(records, corrected_ms, strict=True)])
    table_only = np.array(
        [100 * (record.table_ms - ms) / ms for record, ms in zip(records, corrected_ms, strict=True) if record.table_ms]
    )
    return TableErrors(
        candidates=len(records),
        within_10_percent=float(np.mean(np.abs(errors) <= 10.0)),
        median_abs_error_percent=float(np.median(np.abs(errors))),
        max_abs_error_percent=float(np.abs(errors).max()),
        errors_percent=[round(float(error), 2) for error in errors],
        raw_within_10_percent=float(np.mean(np.abs(raw) <= 10.0)),
        raw_median_abs_error_percent=float(np.median(np.abs(raw))),
        raw_errors_percent=[round(float(error), 2) for error in raw],
        table_only_within_10_percent=float(np.mean(np.abs(table_only) <= 10.0)) if len(table_only) else None,
        table_only_median_abs_error_percent=float(np.median(np.abs(table_only))) if len(table_only) else None,
        table_only_errors_percent=[round(float(error), 2) for error in table_only],
    )


def _target_lines(target: dict | None) -> list[str]:
    """What was timed: the target variant's file (INT8 by which method) -- every latency below is of that file."""
    if not target:
        return []
    what = f"{target['backend']} {target['precision']}"
    if target.get("timing_method"):
        what += f", quantized by {target['timing_method']} for every timing"
        if target.get("shipped_method") not in (None, target["timing_method"]):
            what += f" (the variant ships {target['shipped_method']}; the models below are built with it)"
    searched = target.get("searched_on")
    if searched and searched.get("variant") != target["variant"]:
        return [
            f"Searched on variant {searched['variant']} ({searched['backend']} {searched['precision']}): the "
            "iterations' latencies are of that file. The models below are built, timed and scored as variant "
            f"{target['variant']} ({what}).",
            "",
        ]
    return [f"Target: variant {target['variant']} ({what}); every latency here is of that file.", ""]


def render_markdown(report: SearchReport) -> str:
    start = report.point("start")
    lines = [
        f"# NetAdapt search: {report.model} at {report.resolution} px on {report.device['name']} ({report.backend})",
        "",
        *_target_lines(report.target),
        f"Budget {report.budget_ms:.3f} ms (start measured {report.start_measured_ms:.3f} ms when the search "
        f"began, estimated {report.start_estimate_ms:.3f} ms). {report.stop_reason}.",
        f"Oracle: {report.oracle}. Search time {report.search_seconds / 60:.1f} min; "
        f"{report.oracle_measurements} oracle timings ({report.oracle_seconds:.0f} s"
        + (f", {report.oracle_noisy} of them on a busy device, kept" if report.oracle_noisy else "")
        + "), "
        f"{report.device_measurements} whole-model timings on the device ({report.device_seconds:.0f} s).",
        f"Channels kept in multiples of {report.channel_steps.step}: {report.channel_steps.describe()}."
        if report.channel_steps is not None
        else f"Channels kept in multiples of {report.config.get('channel_divisor')} (the recipe's divisor).",
        "",
        "## Models (measured on the device, test top-1 through its runtime)",
        "",
        f"p50 in turn: the models timed one after another in each of {len(start.rounds_ms)} rounds, median of "
        "the per-round p50s (what speed-ups use); p50 alone: each model's own timing loop.",
        "",
        "| model | kind | p50 in turn ms | speed-up vs start | p50 alone ms | test top-1 % | params | MACs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for point in report.points:
        lines.append(
            f"| {point.name} {point.detail} | {point.kind} | {_ms(point.p50_in_turn_ms)} | "
            f"{start.p50() / point.p50():.2f}x | {point.latency_ms.p50:.3f} | {100 * point.test_top1:.2f} | "
            f"{point.params / 1e6:.2f}M | {point.macs / 1e6:.1f}M |"
        )
    lines += [
        "",
        "## Iterations (latency estimated by the oracle and measured on the device; holdout top-1 after "
        "short-term fine-tuning)",
        "",
        "Measured ms is the chosen model's p50 as timed; a shared host's speed drifts between iterations, so "
        "measured / start is its p50 over the starting model's, the two timed in turn in the same rounds.",
        "",
        "| # | chosen | target ms | estimated ms | table alone ms | measured ms | measured / start in turn "
        "| holdout top-1 % | proposals (skipped) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for iteration in report.iterations:
        skipped = sum(1 for record in iteration.proposals if record.skipped)
        lines.append(
            f"| {iteration.index} | {iteration.action.describe()} | {iteration.target_ms:.3f} | "
            f"{iteration.estimate_ms:.3f} | {_ms(iteration.table_ms)} | {_ms(iteration.measured_ms)} | "
            f"{_ms(iteration.ratio_to_start)} | {100 * iteration.holdout_top1:.2f} | "
            f"{len(iteration.proposals)} ({skipped}) |"
        )
    if report.table_fit is not None:
        fit = report.table_fit
        lines += [
            "",
            f"Lookup table fit: {fit.intercept_ms:.3f} ms + {fit.compute_scale:.3f} x blocks + "
            f"{1000 * fit.per_block_ms:.1f} us per block, on {len(fit.calibration)} calibration models timed in "
            "turn on the device:",
            "",
            "| calibration model | blocks | sum of blocks ms | measured ms | estimated ms | error % |",
            "|---|---|---|---|---|---|",
        ]
        for point in fit.calibration:
            error = 100 * (point.estimate_ms - point.measured_ms) / point.measured_ms
            lines.append(
                f"| {point.name} | {point.blocks} | {point.blocks_ms:.3f} | {point.measured_ms:.3f} | "
                f"{point.estimate_ms:.3f} | {error:+.1f} |"
            )
    if report.table is not None:
        table = report.table
        lines += [
            "",
            f"Lookup table vs measured: {table.candidates} candidates, {100 * table.within_10_percent:.1f}% within "
            f"+-10%, median |error| {table.median_abs_error_percent:.1f}%, max {table.max_abs_error_percent:.1f}% "
            "(each candidate timed in turn with the starting model, which takes the host's drift out); "
            f"against the timings as taken: {100 * table.raw_within_10_percent:.1f}% within +-10%, median "
            f"|error| {table.raw_median_abs_error_percent:.1f}%.",
        ]
        if table.table_only_within_10_percent is not None and report.config.get("recalibrate"):
            lines += [
                "",
                "The estimates above are recalibrated: the table's figure x the median of measured / table "
                "over the models measured in earlier iterations. The table's own figure, as fitted: "
                f"{100 * table.table_only_within_10_percent:.1f}% within +-10%, median |error| "
                f"{table.table_only_median_abs_error_percent:.1f}%.",
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
    styles = {
        "start": ("k", "o"),
        "netadapt": ("C3", "*"),
        "width": ("C0", "s"),
        "resolution": ("C2", "^"),
        "magnitude": ("C1", "D"),
    }
    for kind, (color, marker) in styles.items():
        points = sorted((p for p in report.points if p.kind == kind), key=lambda p: p.p50())
        if not points:
            continue
        label = {
            "width": "width multiplier",
            "resolution": "resolution multiplier",
            "magnitude": "Torch-Pruning uniform magnitude",
        }.get(kind, kind)
        axes.plot(
            [p.p50() for p in points],
            [100 * p.test_top1 for p in points],
            marker=marker,
            color=color,
            linestyle="-" if len(points) > 1 else "none",
            markersize=11 if kind == "netadapt" else 7,
            label=label,
        )
    axes.set_xlabel(f"p50 latency measured on {report.device['name']} ({report.backend}, ms)")
    axes.set_ylabel(f"test top-1 (%) on {report.data['name']}")
    axes.set_title(f"{report.model} at {report.resolution} px: NetAdapt vs its baselines")
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
