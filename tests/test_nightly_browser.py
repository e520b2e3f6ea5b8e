"""The nightly page in a real headless Chromium (Debian's package, installed by .ci/run): its tables and
plots are there and drawn, and text from inputs is shown as text, never run as markup.

The committed screenshot (reports/nightly-screenshot.png) is this test's, taken of a real night:
    EDGEFLOW_NIGHTLY_PAGE=reports/nightly/<date>/night.html .venv/bin/python -m pytest tests/test_nightly_browser.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser import inspect_page, needs_chromium

pytestmark = needs_chromium


def _inspect(page_path: Path, screenshot: Path) -> dict:
    return inspect_page(
        page_path,
        script="""() => ({
                title: document.title,
                tables: Array.from(document.querySelectorAll('table')).map(t => t.id || t.className),
                cellRows: document.querySelectorAll('table#cells tbody tr').length,
                plots: Array.from(document.querySelectorAll('img.plot')).map(
                    i => ({cls: i.className, drawn: i.complete && i.naturalWidth > 200})),
                text: document.body.innerText,
                injected: window.__injected === 1 || document.getElementById('injected') !== null,
                scripts: document.scripts.length,
            })""",
        screenshot=screenshot,
        viewport={"width": 1280, "height": 900},
    )


@pytest.mark.slow  # two real nights of tiny cells (~40 s, the session's two_nights): with the slow tests
def test_the_night_page_in_chromium(two_nights: dict, tmp_path: Path) -> None:
    page = two_nights["out"] / "night-2" / "night.html"
    found = _inspect(page, tmp_path / "night.png")
    assert found["title"].startswith("edgeflow nightly night-2")
    assert {"cells", "environment", "layers"} <= set(found["tables"])
    assert found["cellRows"] == 4
    kinds = sorted(plot["cls"] for plot in found["plots"])
    assert kinds == ["plot pareto", "plot trend"] and all(plot["drawn"] for plot in found["plots"])
    assert not found["injected"] and found["scripts"] == 0 and not found["errors"]
    assert "<script>window.__injected = 1</script>" in found["text"]  # shown as text
    assert "<i>broken&amp;<i>.pt" in found["text"]  # the failing cell's error, as text
    assert (tmp_path / "night.png").stat().st_size > 20_000


@pytest.mark.skipif("EDGEFLOW_NIGHTLY_PAGE" not in os.environ, reason="set EDGEFLOW_NIGHTLY_PAGE to a real night")
def test_screenshot_of_a_real_night() -> None:
    page = Path(os.environ["EDGEFLOW_NIGHTLY_PAGE"])
    target = Path(os.environ.get("EDGEFLOW_SCREENSHOT", "reports/nightly-screenshot.png"))
    found = _inspect(page, target)
    assert {"cells", "environment"} <= set(found["tables"]) and found["plots"]
    assert all(plot["drawn"] for plot in found["plots"]) and not found["errors"]
