"""Locating the Debian tools the screenshot test drives (Chromium, Tesseract).

Like `promtool` (tests/deploy/promtool.py), they are installed by `make test` (`make
page-tools`, Debian's `chromium` and `tesseract-ocr`); a missing one fails the test, never skips
it, since a skipped check looks like a passed one in CI.
"""

from __future__ import annotations

import shutil

import pytest


def debian_tool(binary: str, package: str) -> str:
    """The path of `binary`; fails naming the Debian package when it is not installed."""
    found = shutil.which(binary)
    if found is None:
        pytest.fail(f"{binary} not found on PATH: install Debian's `{package}` package "
                    f"(apt-get install {package}); `make page-tools` installs it")
    return found
