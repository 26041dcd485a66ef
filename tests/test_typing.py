# SPDX-License-Identifier: GPL-2.0-only
"""mypy, strict on the binding (pyproject.toml's [tool.mypy]), as ci/lint.sh runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_is_clean_on_the_binding():
    mypy = Path(sys.executable).parent / "mypy"
    if not mypy.exists():
        mypy = Path(shutil.which("mypy") or "")
    if not mypy.is_file():
        pytest.skip("mypy is not installed (a dev dependency: pip install -e '.[dev]')")
    assert "\n.venv/bin/mypy" in (ROOT / "ci" / "lint.sh").read_text()
    proc = subprocess.run([str(mypy)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
