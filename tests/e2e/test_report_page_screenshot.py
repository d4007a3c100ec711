"""The operators' page in a real browser: headless Chromium renders it and OCR reads the
numbers back, so "legible in a screenshot" is checked, not assumed.

README's screenshot (docs/report-page.png) is the same page served by `make serve` after
README's rollout loop, not this test's fixture.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from service.pages import render_report_page
from tests.e2e.debian_tools import debian_tool
from tests.fixtures.reports import gate_verdict, probe_report

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WINDOW = (1280, 2400)


def screenshot(page: Path, out: Path) -> Path:
    """Chromium's screenshot of the page file, at the window size a README image needs; it
    waits for every compositor stage (a cold first run once came back half painted)."""
    chromium = debian_tool("chromium", "chromium")
    png = out / "report-page.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--run-all-compositor-stages-before-draw", "--virtual-time-budget=2000",
         f"--user-data-dir={out / 'profile'}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
         f"--screenshot={png}", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True)
    return png


def ocr(png: Path) -> str:
    """The text Tesseract reads on the screenshot; one OpenMP thread, as its threads contend
    on a page this size (11 s instead of 2 s on two cores)."""
    tesseract = debian_tool("tesseract", "tesseract-ocr")
    return subprocess.run([tesseract, str(png), "-"], capture_output=True, text=True,
                          env={**os.environ, "OMP_THREAD_LIMIT": "1"}, timeout=120,
                          check=True).stdout


def test_failed_verdict_reads_in_a_screenshot(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render_report_page(probe_report(), gate_verdict(passed=False),
                                       1765000100.0), encoding="utf-8")
    png = screenshot(page, tmp_path)
    with Image.open(png) as image:
        assert image.size == WINDOW
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 16
    text = ocr(png)
    assert "FAILED" in text
    assert "50.0" in text
