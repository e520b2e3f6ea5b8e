"""Markdown and HTML pages from a Report, with jinja2 (HTML autoescaped: names come from users)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import jinja2

from edgeflow.report.schema import Report

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("edgeflow.report", "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)


def _filters() -> dict:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}"

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    def mib(value: int | None) -> str:
        return "n/a" if value is None else f"{value / 2**20:.2f}"

    def signed(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:+.1f}%"

    def markdown_cell(value: object) -> str:
        """Text from inputs inside a Markdown table: no HTML (CI summaries render it), no column breaks."""
        text = html.escape(str(value), quote=False).replace("|", "\\|")
        return " ".join(text.split())

    def millions(value: int) -> str:
        return f"{value / 1e6:.2f}M"

    def kind(measured: bool) -> str:
        return "measured" if measured else "estimated"

    def latency(variant, field: str = "p50") -> str:
        """A measured statistic, or for an estimated variant its estimate (p50 column only), marked so."""
        if variant.latency_ms is not None:
            value = getattr(variant.latency_ms, field)
            return "n/a" if value is None else ms(value)
        if field == "p50" and variant.estimate is not None:
            return f"~{variant.estimate.ms:.3f} (estimated, {variant.estimate.method})"
        return "n/a"

    return {
        "pct": pct, "ms": ms, "mib": mib, "millions": millions, "kind": kind, "latency": latency, "signed": signed,
        "md": markdown_cell,
    }  # fmt: skip


_ENVIRONMENT.filters.update(_filters())


def render_template(name: str, **context) -> str:
    """Any of the package's report templates (the nightly pages use it too)."""
    return _ENVIRONMENT.get_template(name).render(**context)


def render_markdown(report: Report, *, plot: str) -> str:
    return _ENVIRONMENT.get_template("report.md.j2").render(report=report, plot=plot)


def render_html(report: Report, *, plot_path: Path) -> str:
    """A self-contained page: the plot is embedded as a data URI."""
    plot_data = base64.b64encode(plot_path.read_bytes()).decode("ascii") if plot_path.exists() else None
    return _ENVIRONMENT.get_template("report.html.j2").render(report=report, plot_data=plot_data)
