"""Markdown and HTML pages from a Report, with jinja2 (HTML autoescaped: names come from users)."""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from edgeflow.compress.stats import START_SLOWER_BY
from edgeflow.report.schema import Report

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("edgeflow.report", "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)
_ENVIRONMENT.globals["start_slower_by"] = START_SLOWER_BY  # the bound mixed precision's start is picked with


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


_FRACTION_OF_TOP1 = re.compile(r"(?:^|_)(?:top[15]|accuracy|agreement)(?:_|$)")


def _setting_value(value: Any, key: str, *, inline: bool = False) -> str:
    """One recorded setting as a person reads it, rounded as the tables round it: a top-1 fraction (by its
    key, e.g. ``holdout_top1``) as a percentage, ``*_ms`` to 3 decimals, other floats to 4 significant digits.
    ``inline``: inside a one-line mapping, where a list is bracketed to stay apart from its neighbours."""
    key = str(key)
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if _FRACTION_OF_TOP1.search(key):
            return f"{_pct(value)}%"
        if key == "ms" or key.endswith("_ms"):
            return _ms(value)
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return f"({_mapping_text(value)})" if value else "none"
    if isinstance(value, list | tuple | set | frozenset):
        if not value:
            return "none"
        items = ", ".join(_setting_value(item, key, inline=True) for item in value)
        return f"[{items}]" if inline and len(value) > 1 else items
    return " ".join(str(value).split())


def _entry_text(key: object, value: Any) -> str:
    """``key: value``; a mapping as ``key (k: v, ...)``, or ``key: a (...), b (...)`` when it holds only mappings."""
    if isinstance(value, Mapping) and value:
        if all(isinstance(item, Mapping) and item for item in value.values()):
            return f"{key}: {_mapping_text(value)}"
        return f"{key} ({_mapping_text(value)})"
    return f"{key}: {_setting_value(value, str(key))}"


def _mapping_text(settings: Mapping) -> str:
    return ", ".join(
        f"{key} ({_mapping_text(value)})" if isinstance(value, Mapping) and value
        else f"{key}: {_setting_value(value, str(key), inline=True)}"
        for key, value in settings.items()
    )  # fmt: skip


def settings_text(settings: Mapping) -> str:
    """Settings on one line, for Markdown cells: ``preset: performance; ...; preset_choice: mixed (holdout_top1:
    98.06%, p50_ms: 1.320, measured: yes), performance (...)``."""
    return "; ".join(_entry_text(key, value) for key, value in settings.items())


def settings_lines(settings: Mapping, *, depth: int = 0) -> list[tuple[str, list]]:
    """Settings as nested (line, sub-lines) for an HTML list: a mapping at the top, or one holding mappings, gets
    its own sub-list; a flat mapping below the top stays on its line (``mixed (holdout_top1: 98.06%, ...)``)."""
    lines: list[tuple[str, list]] = []
    for key, value in settings.items():
        nested = isinstance(value, Mapping) and value
        if nested and (depth == 0 or any(isinstance(item, Mapping) for item in value.values())):
            lines.append((f"{key}:", settings_lines(value, depth=depth + 1)))
        else:
            lines.append((_entry_text(key, value), []))
    return lines


def _filters() -> dict:
    pct, ms = _pct, _ms

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

    def timing(variant) -> str:
        """How the latency was had: estimated, emulated, measured, or measured while the device was busy (noisy)."""
        latency = variant.latency_ms
        if latency is None or not variant.measured:
            return variant.latency_kind
        if latency.noisy:
            share = latency.state.others_cpu_share
            return f"measured, noisy (other processes took {100 * share:.0f}% of the CPU)"
        return "measured"

    def latency(variant, field: str = "p50") -> str:
        """A measured statistic, or for an estimated variant its estimate (p50 column only), marked so."""
        if variant.latency_ms is not None:
            value = getattr(variant.latency_ms, field)
            return "n/a" if value is None else ms(value) + (" (emulated)" if variant.emulated else "")
        if field == "p50" and variant.estimate is not None:
            return f"~{variant.estimate.ms:.3f} (estimated, {variant.estimate.method})"
        return "n/a"

    return {
        "pct": pct, "ms": ms, "mib": mib, "millions": millions, "timing": timing, "latency": latency,
        "signed": signed, "md": markdown_cell, "settings_text": settings_text, "settings_lines": settings_lines,
    }  # fmt: skip


_ENVIRONMENT.filters.update(_filters())


def render_template(name: str, **context) -> str:
    """Any of the package's report templates (the nightly pages use it too)."""
    return _ENVIRONMENT.get_template(name).render(**context)


def render_markdown(report: Report, *, plot: str, sensitivity_plots: Mapping[str, str] | None = None) -> str:
    return _ENVIRONMENT.get_template("report.md.j2").render(
        report=report, plot=plot, sensitivity_plots=sensitivity_plots or {}
    )


def render_html(report: Report, *, plot_path: Path, sensitivity_plots: Mapping[str, Path] | None = None) -> str:
    """A self-contained page: the plots are embedded as data URIs."""
    plot_data = base64.b64encode(plot_path.read_bytes()).decode("ascii") if plot_path.exists() else None
    sensitivity_data = {
        name: base64.b64encode(path.read_bytes()).decode("ascii")
        for name, path in (sensitivity_plots or {}).items()
        if path.exists()
    }
    return _ENVIRONMENT.get_template("report.html.j2").render(
        report=report, plot_data=plot_data, sensitivity_data=sensitivity_data
    )
