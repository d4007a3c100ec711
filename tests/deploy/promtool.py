"""Locating and calling `promtool` (Debian's `prometheus` package) for the deploy tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def promtool(*args: str | Path) -> subprocess.CompletedProcess:
    """Run promtool from the repository root; fail (never skip) when it is not installed."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found on PATH: install Debian's `prometheus` package "
                    "(apt-get install prometheus); `make` installs it")
    return subprocess.run([binary, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
