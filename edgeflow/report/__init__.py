"""Reports: report.json (the record), report.md, a self-contained report.html, and the plot."""

from __future__ import annotations

from pathlib import Path

from edgeflow.io import write_json, write_text
from edgeflow.report.plot import plot_accuracy_latency, plot_sensitivity, sensitivity_plot_name
from edgeflow.report.render import render_html, render_markdown
from edgeflow.report.schema import Report, VariantRecord

PLOT_NAME = "accuracy_latency.png"


def write_report(report: Report, *, folder: Path) -> None:
    """Write every report file into ``folder``, each atomically."""
    plot_accuracy_latency(report, path=folder / PLOT_NAME)
    sensitivity_plots = {}
    for variant in report.variants:
        mixed = variant.quantization.mixed_precision if variant.quantization is not None else None
        if mixed is not None and mixed.sensitivity is not None:
            sensitivity_plots[variant.name] = sensitivity_plot_name(variant.name)
            title = f"{variant.name}: per-layer sensitivity through {variant.backend} ({mixed.sensitivity.method})"
            plot_sensitivity(mixed, title=title, path=folder / sensitivity_plots[variant.name])
    write_json(folder / "report.json", report.model_dump(mode="json"))
    write_text(folder / "report.md", render_markdown(report, plot=PLOT_NAME, sensitivity_plots=sensitivity_plots))
    write_text(folder / "report.html", render_html(report, plot_path=folder / PLOT_NAME,
                                                   sensitivity_plots={name: folder / file for name, file in
                                                                      sensitivity_plots.items()}))  # fmt: skip


__all__ = ["PLOT_NAME", "Report", "VariantRecord", "write_report"]
