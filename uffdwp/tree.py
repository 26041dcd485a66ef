# SPDX-License-Identifier: GPL-2.0-only
"""Where the files uffdwp reads beside its package are: the suites, pytest.ini, the guest files.

Run from a checkout, they are the checkout's own, around the package directory. An installed
wheel has no checkout: its build copies the same files into the package at the same relative
paths (setup.py's TREE), so there the package directory stands for the checkout's root and
every path below reads the same either way.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# A checkout has its pyproject.toml beside the package; an installed package's parent is
# site-packages, which has none.
IN_CHECKOUT = (PACKAGE_DIR.parent / "pyproject.toml").is_file()
ROOT = PACKAGE_DIR.parent if IN_CHECKOUT else PACKAGE_DIR

SUITES_DIR = ROOT / "suites"
PYTEST_INI = ROOT / "pytest.ini"  # the suites' settings: timeouts, strict markers and xfails
VMS_DIR = ROOT / "vms"  # the kernel catalogue, the guest's init and scripts, the kernel config

# What the matrix writes (downloaded kernels, scratch disks): vms/cache and vms/work in a
# checkout (git ignores them); installed, the user's cache directory, never site-packages.
_STATE_DIR = VMS_DIR if IN_CHECKOUT else (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "uffdwp")
CACHE_DIR = _STATE_DIR / "cache"
WORK_DIR = _STATE_DIR / "work"
