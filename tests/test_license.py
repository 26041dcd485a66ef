# SPDX-License-Identifier: GPL-2.0-only
"""Every source file says its licence in its first lines (an SPDX identifier, as the kernel
does), the one pyproject.toml declares, and LICENSE holds that licence's text. New files are
caught here: a .py, .c, .h, .sh, .S, .cjs file, the Vagrantfile or any script with a #! line."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = {".py", ".c", ".h", ".sh", ".S", ".cjs"}
NAMES = {"Vagrantfile"}
HEAD_LINES = 3  # a #! line, an encoding line, then the identifier at the latest
SPDX = re.compile(r"SPDX-License-Identifier: (\S+)")


def licence() -> str:
    """pyproject.toml's licence (read by pattern: tomllib is newer than the Python floor)."""
    m = re.search(r'^license = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert m, "pyproject.toml declares no licence"
    return m.group(1)


def source_files() -> list[Path]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed: no list of tracked files")
    # safe.directory: CI runs the tests as root in a checkout another user may own
    out = subprocess.run(["git", "-c", f"safe.directory={ROOT}", "-C", str(ROOT), "ls-files",
                          "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, text=True, check=True).stdout
    files = []
    for name in filter(None, out.split("\0")):
        path = ROOT / name
        if not path.is_file():
            continue  # deleted, not yet committed
        if path.suffix in SUFFIXES or path.name in NAMES or path.read_bytes()[:2] == b"#!":
            files.append(path)
    return files


def test_license_is_the_declared_one():
    assert licence() == "GPL-2.0-only"
    text = (ROOT / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 2, June 1991" in text


def test_every_source_file_has_the_spdx_identifier():
    files = source_files()
    assert len(files) > 100, "the file list is implausibly short"
    missing, wrong = [], []
    for path in files:
        head = path.read_text(errors="replace").splitlines()[:HEAD_LINES]
        found = [m.group(1) for line in head if (m := SPDX.search(line))]
        if not found:
            missing.append(str(path.relative_to(ROOT)))
        elif found[0].rstrip("*/ ") != licence():
            wrong.append(f"{path.relative_to(ROOT)}: {found[0]}")
    assert not missing, ("no 'SPDX-License-Identifier: GPL-2.0-only' in the first "
                         f"{HEAD_LINES} lines of: {', '.join(missing)}")
    assert not wrong, "another licence: " + ", ".join(wrong)
