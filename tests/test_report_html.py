"""report.html as a person reads it: the quantization settings are readable (no raw dicts, no 17-digit
floats) and every table fits a 1280-pixel-wide window in a real headless Chromium (Debian's package,
installed by .ci/run).

The input is the report.json of ``make demo`` (tests/data/report/demo-report.json), written to report.html by
the product's own ``write_report``.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import inspect_page, needs_chromium

from edgeflow.latency import LatencyEstimate
from edgeflow.report import write_report
from edgeflow.report.schema import Report

DEMO = Path(__file__).parent / "data" / "report" / "demo-report.json"
VIEWPORT = {"width": 1280, "height": 800}
NUMBER = re.compile(r"\d*\.\d+")


def _long_floats(text: str) -> list[str]:
    """Numbers of 10 digits or more, as ``str(float)`` writes them (0.9805555555555555)."""
    return [number for number in NUMBER.findall(text) if len(number.replace(".", "")) >= 10]


class _Cells(HTMLParser):
    """The text of each cell of each table, by table id: {id: [[cell, ...] per row]}."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag in ("li", "br") and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _demo() -> Report:
    return Report.model_validate_json(DEMO.read_text())


def _estimated(report: Report) -> Report:
    """The same report as if no variant could be timed: the p50 cells then carry the longest text."""
    changed = report.model_copy(deep=True)
    for variant in changed.variants:
        ms = variant.p50()
        variant.latency_ms, variant.measured = None, False
        variant.estimate = LatencyEstimate(ms=ms, method="lookup-table", device="cpu", precision=variant.precision)
    return changed


def _page(report: Report, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_report(report, folder=folder)
    return folder / "report.html"


def _settings_cells(page: Path) -> dict[str, str]:
    parser = _Cells()
    parser.feed(page.read_text())
    header, *rows = parser.tables["quantization"]
    column = header.index("settings")
    return {row[0]: row[column] for row in rows}


def test_quantization_settings_are_readable(tmp_path: Path) -> None:
    report = _demo()
    settings = _settings_cells(_page(report, tmp_path))
    assert list(settings) == ["openvino-int8"]
    text = settings["openvino-int8"]
    assert not _long_floats(text), text
    assert not re.search(r"[{}'\"]", text), text  # no dict braces, no repr quotes
    assert "=" not in text, text
    # The recorded values, rounded as the other tables round them: top-1 as a percentage, ms to 3 decimals.
    choice = report.variants[2].quantization.settings["preset_choice"]
    assert choice["mixed"]["holdout_top1"] == pytest.approx(0.9805555555555555)
    assert re.search(r"mixed\b.*holdout_top1: 98\.06%.*p50_ms: 1\.320\b.*measured: yes", text, re.S), text
    assert re.search(r"performance\b.*holdout_top1: 98\.33%.*p50_ms: 1\.204\b", text, re.S), text
    assert re.search(r"\bpreset: performance\b", text) and re.search(r"\bsubset_size: 300\b", text), text
    assert re.search(r"\bfast_bias_correction: yes\b", text), text


def test_markdown_settings_are_readable_too(tmp_path: Path) -> None:
    write_report(_demo(), folder=tmp_path)
    lines = (tmp_path / "report.md").read_text().splitlines()
    settings = next(line for line in lines if line.startswith("| openvino-int8 | nncf-ptq |")).split(" | ")[2]
    assert not _long_floats(settings), settings
    assert not re.search(r"[{}'\"]", settings), settings
    assert "holdout_top1: 98.06%" in settings and "p50_ms: 1.204" in settings, settings


def _inspect(page_path: Path, screenshot: Path) -> dict:
    return inspect_page(
        page_path,
        script="""() => ({
                viewport: window.innerWidth,
                scrollWidth: document.documentElement.scrollWidth,
                tables: Array.from(document.querySelectorAll('table')).map(t => {
                    const box = t.getBoundingClientRect();
                    const cells = Array.from(t.querySelectorAll('th, td'));
                    return {
                        id: t.id, left: box.left, right: box.right,
                        cellRight: Math.max(...cells.map(c => c.getBoundingClientRect().right)),
                        // a cell whose content is wider than the cell is cut (or spills over its neighbour)
                        overflowing: cells.filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.innerText),
                    };
                }),
                variantColumns: Array.from(document.querySelectorAll('table#variants thead th')).map(
                    th => ({text: th.innerText, right: th.getBoundingClientRect().right})),
            })""",
        screenshot=screenshot,
        viewport=VIEWPORT,
    )


@needs_chromium
@pytest.mark.parametrize("variant", ["measured", "estimated"])
def test_every_table_fits_1280_pixels_in_chromium(variant: str, tmp_path: Path) -> None:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    report = _demo() if variant == "measured" else _estimated(_demo())
    screenshot = tmp_path / f"report-{variant}.png"
    found = _inspect(_page(report, tmp_path / "run"), screenshot)
    width = VIEWPORT["width"]
    assert found["viewport"] == width and not found["errors"]
    assert {"variants", "latency-sources", "quantization", "parity", "memory"} <= {t["id"] for t in found["tables"]}
    for table in found["tables"]:
        assert table["left"] >= 0 and table["right"] <= width, table
        assert table["cellRight"] <= width and not table["overflowing"], table
    columns = found["variantColumns"]
    assert columns[-2]["text"] == "MACs" and all(column["right"] <= width for column in columns), columns
    assert found["scrollWidth"] <= width, found["scrollWidth"]
    assert screenshot.stat().st_size > 20_000
