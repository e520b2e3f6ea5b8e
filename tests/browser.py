"""A page opened in a real headless Chromium (Debian's package, installed by .ci/run), driven by playwright."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = next((path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]  # fmt: skip
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (.ci/run installs Debian's package)")


def inspect_page(page_path: Path, *, script: str, screenshot: Path, viewport: dict[str, int]) -> dict:
    """Open ``page_path`` at ``viewport``, evaluate ``script`` (a JS arrow function returning an object), save
    a full-page screenshot; the script's object with the page's JS errors under ``errors``."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport=viewport)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            found = page.evaluate(script)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    found["errors"] = errors
    return found
