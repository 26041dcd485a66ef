# SPDX-License-Identifier: GPL-2.0-only
"""One version: pyproject.toml takes it from uffdwp.__version__, the installed metadata says it."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

import uffdwp

tomllib = pytest.importorskip("tomllib", reason="tomllib: standard library from Python 3.11")

ROOT = Path(__file__).resolve().parent.parent


def test_one_version_source():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "uffdwp.__version__"}
    assert version("uffdwp") == uffdwp.__version__
