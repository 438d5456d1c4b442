"""Fixtures of the browser tier: headless Chromium (Debian's package) driven by Playwright (PyPI).

Playwright drives the system's Chromium (`executable_path`): it downloads no browser. Without
Chromium or Playwright the tier is skipped, unless CORTEXD_REQUIRE_BROWSER=1 (.ci/run, which
installs Chromium), where it fails instead. Screenshots go to $CORTEXD_TEST_ARTIFACTS, else
tests/browser/artifacts/ (not committed).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CORTEXD_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = Path(os.environ.get("CORTEXD_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser():
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install -e '.[test]')"
    if missing is None and not shutil.which(CHROMIUM):
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if missing is not None:
        if os.environ.get("CORTEXD_REQUIRE_BROWSER") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_playwright() as p:
        # as root Chromium needs --no-sandbox; Playwright gives each launch a fresh profile
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()
