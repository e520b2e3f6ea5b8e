"""The night's report: night.json (schema), night.md (fits a CI job summary), night.html (self-contained:
tables, a Pareto plot per device, trend plots over past nights, the slowest layers, the environment)."""

from __future__ import annotations

import base64
from dataclasses import asdict
from pathlib import Path

from pydantic import BaseModel

from edgeflow.io import write_json, write_text
from edgeflow.nightly.history import CellRecord
from edgeflow.nightly.regression import Finding
from edgeflow.report.render import render_template

SCHEMA_VERSION = 1


class NightCellRecord(BaseModel):
    """One cell of the night as reported (raw samples stay in the history)."""

    model: str
    device: str
    precision: str
    backend: str
    status: str
    error: str | None
    measured: bool  # latency timed on the device's runtime; false = estimated (estimate_ms) or not run
    p50_ms: float | None
    p90_ms: float | None
    estimate_ms: float | None
    estimate_method: str | None
    latency_source: str | None
    samples: int  # raw latency samples kept in the history
    round_p50_ms: list[float]  # p50 of each round when the night's cells were timed in turn
    timing: str | None  # how p50_ms was timed
    noisy: bool = False  # timed while other processes kept the device busy (after the retries): kept, and said
    emulated: bool = False  # p50_ms was timed under an emulator of the device: neither measured nor estimated
    top1: float | None
    test_images: int | None
    size_bytes: int | None
    runtime_version: str | None
    model_hash: str | None
    artifact_hash: str | None
    slowest_layers: list[dict]
    report: str | None  # the cell's own report, relative to the night's folder
    seconds: float
    node: str | None = None  # where it ran: this process, or a farm node (host, address, node id, pid)
    timing_node: str | None = None  # on a farm: the node its in-turn timing ran on
    attempts: int = 1  # on a farm: 2 when its first worker died and it ran once more

    @classmethod
    def from_cell(cls, cell: CellRecord, *, seconds: float) -> NightCellRecord:
        detail = cell.detail
        return cls(
            model=cell.model, device=cell.device, precision=cell.precision, backend=cell.backend, status=cell.status,
            error=cell.error, measured=cell.measured, p50_ms=cell.p50_ms, p90_ms=cell.p90_ms,
            estimate_ms=detail.get("estimate_ms"), estimate_method=detail.get("estimate_method"),
            latency_source=detail.get("latency_source"), samples=0 if cell.samples is None else len(cell.samples),
            round_p50_ms=detail.get("round_p50_ms", []), timing=detail.get("timing"), noisy=cell.noisy,
            emulated=cell.emulated,
            top1=cell.top1, test_images=cell.test_images, size_bytes=cell.size_bytes,
            runtime_version=cell.runtime_version, model_hash=cell.model_hash, artifact_hash=cell.artifact_hash,
            slowest_layers=detail.get("slowest_layers", []), report=detail.get("report"), seconds=seconds,
            node=detail.get("node"), timing_node=detail.get("timing_node"), attempts=detail.get("attempts", 1),
        )  # fmt: skip

    @property
    def key(self) -> str:
        return "/".join((self.model, self.device, self.precision, self.backend))


class FindingRecord(BaseModel):
    model: str
    device: str
    precision: str
    backend: str
    kind: str
    flagged: bool
    message: str
    current: float | None
    baseline: float | None
    change: float | None
    interval: list[float] | None
    p_value: float | None
    threshold: float | None
    baseline_runs: list[str]
    changes: list[str]


def finding_record(finding: Finding) -> FindingRecord:
    fields = asdict(finding)
    model, device, precision, backend = fields.pop("key")
    interval = fields.pop("interval")
    return FindingRecord(
        model=model, device=device, precision=precision, backend=backend,
        interval=list(interval) if interval else None, **fields,
    )  # fmt: skip


class TrendPoint(BaseModel):
    run_id: int  # the history's order of the nights
    label: str
    p50_ms: float | None
    top1: float | None
    measured: bool
    status: str


class NightReport(BaseModel):
    schema_version: int = SCHEMA_VERSION
    label: str
    started: str
    finished: str
    recipe_name: str
    recipe_hash: str
    description: str
    recipe: dict
    history: str
    environment: dict
    cells: list[NightCellRecord]
    findings: list[FindingRecord]
    trends: dict[str, list[TrendPoint]]
    seconds: float

    @property
    def regressions(self) -> list[FindingRecord]:
        return [finding for finding in self.findings if finding.flagged]

    def finding(self, cell: NightCellRecord, kind: str) -> FindingRecord | None:
        for finding in self.findings:
            if finding.kind == kind and "/".join((finding.model, finding.device, finding.precision,
                                                  finding.backend)) == cell.key:  # fmt: skip
                return finding
        return None


def write_night(report: NightReport, *, folder: Path) -> None:
    """night.json, night.md, night.html and the plots (SVG) into ``folder``."""
    from edgeflow.nightly.plots import pareto_svg, trend_svg

    plots: dict[str, bytes] = {}
    for device in dict.fromkeys(cell.device for cell in report.cells):
        plots[f"pareto-{device}.svg"] = pareto_svg(report, device=device)
        plots[f"trend-{device}.svg"] = trend_svg(report, device=device)
    for name, data in plots.items():
        (folder / name).write_bytes(data)
    write_json(folder / "night.json", report.model_dump(mode="json"))
    write_text(folder / "night.md", render_markdown(report))
    embedded = {
        name: "data:image/svg+xml;base64," + base64.b64encode(data).decode("ascii") for name, data in plots.items()
    }
    write_text(folder / "night.html", render_html(report, plots=embedded))


def render_markdown(report: NightReport) -> str:
    return render_template("nightly.md.j2", report=report)


def render_html(report: NightReport, *, plots: dict[str, str]) -> str:
    return render_template("nightly.html.j2", report=report, plots=plots)
