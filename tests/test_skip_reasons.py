# SPDX-License-Identifier: GPL-2.0-only
"""Skip reasons are stable: identical causes give identical reasons (the reports group skips by
reason), so no random temp-file name may end up in one. And the swapoff regression test's own
swap file sits on the scratch disk, not in the state directory (tmpfs in a guest)."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SWAPOFF_TEST = "suites/test_regressions.py::test_swapoff_keeps_wp_bit_and_data[anon]"

# own_swap_file() twice where swapon must fail (a tmpfs), printing each skip reason
TWICE_ON_TMPFS = """
import sys
from pathlib import Path
import pytest
from uffdwp import hostsetup
from suites.test_regressions import own_swap_file
hostsetup.SCRATCH_DIR = Path(sys.argv[1])
for _ in range(2):
    try:
        with own_swap_file(mb=1):
            print("no skip")
    except pytest.skip.Exception as e:
        print(e.msg)
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="swapon needs root")


@pytest.fixture
def tmpfs_dir():
    path = Path("/dev/shm") / f"uffdwp-test-{os.getpid()}"
    path.mkdir()
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@needs_root
def test_swap_file_skip_reason_names_no_temp_file(tmpfs_dir):
    p = subprocess.run([sys.executable, "-c", TWICE_ON_TMPFS, str(tmpfs_dir)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    reasons = p.stdout.splitlines()
    assert len(reasons) == 2, p.stdout + p.stderr
    assert reasons[0] == reasons[1] and "regr-swap-" not in reasons[0], reasons
    assert reasons[0].startswith(f"cannot set up a swap file in {tmpfs_dir} (swapon: ")
    assert not list(tmpfs_dir.iterdir()), "the swap file was left behind"


@needs_root
def test_swapoff_regression_runs_with_its_state_on_tmpfs(tmpfs_dir, tmp_path):
    """As in a guest: the state directory on tmpfs, the scratch directory on a disk."""
    junit = tmp_path / "junit.xml"
    p = subprocess.run([sys.executable, "-m", "pytest", SWAPOFF_TEST, "-p", "no:cacheprovider",
                        "-p", "no:xdist", "-q", f"--junitxml={junit}"], cwd=REPO,
                       env={**os.environ, "UFFDWP_STATE_DIR": str(tmpfs_dir)},
                       capture_output=True, text=True, timeout=120)
    (case,) = ET.parse(junit).getroot().iter("testcase")
    skipped = case.find("skipped")
    assert skipped is None, skipped.get("message")
    assert p.returncode == 0, p.stdout[-2000:]
