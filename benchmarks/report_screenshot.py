"""Regenerates the screenshots of docs/report.md (docs/images/report-*.png) in headless Chromium.

The dashboard of docs/results/history-noisy-9, as Chromium renders it.
Needs Chromium (Debian's chromium package, or $PYTEST_MLXVLM_CHROMIUM) and playwright (the dev
extra). Run it from the repository root after `python -m benchmarks.regenerate`:

    python -m benchmarks.report_screenshot
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ._common import parser

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "results" / "history-noisy-9"
OUT = ROOT / "docs" / "images"


def main() -> None:
    args = parser(__doc__).parse_args()
    del args
    from playwright.sync_api import sync_playwright

    browser_path = os.environ.get("PYTEST_MLXVLM_CHROMIUM") or shutil.which("chromium")
    if browser_path is None:
        raise SystemExit("no chromium: apt-get install chromium (or set $PYTEST_MLXVLM_CHROMIUM)")
    case = next(SITE.glob("*/*/test_image_generation-224x224.html"))
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1040, "height": 800})
            page.goto((SITE / "index.html").as_uri())
            page.screenshot(path=str(OUT / "report-index.png"), full_page=True)
            page.goto(case.as_uri())
            page.locator("figure").first.screenshot(path=str(OUT / "report-chart.png"))
        finally:
            browser.close()
    for name in ("report-index.png", "report-chart.png"):
        print(f"wrote {(OUT / name).relative_to(ROOT)}")


if __name__ == "__main__":
    main()
