# SPDX-License-Identifier: GPL-2.0-only
"""As an unprivileged user (uid 65534, no capabilities but reading files): `uffdwp run` ends with
the line that says what to change and how many tests that unlocks, and probe, snapshot, wrlat
and bench name every way to a userfaultfd, not only /dev/userfaultfd's permissions."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from uffdwp.runner.unlock import NO_UFFD

from .childproc import ROOT, describe

NOBODY = 65534
# CAP_DAC_READ_SEARCH only: the venv's interpreter may live under a 0700 /root (pyenv). It
# reads files; it opens nothing for writing, so /dev/userfaultfd (0600 root) stays closed.
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
REMEDIES = ("vm.unprivileged_userfaultfd", "/dev/userfaultfd", "UFFD_USER_MODE_ONLY", "root")


def _as_nobody(tmp: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    # This checkout's code (PYTHONPATH), run by its venv's interpreter.
    script = 'cd "$1" && shift && HOME="$PWD" PYTHONPATH="$ROOT" exec "$@"'
    try:
        return subprocess.run([*AS_NOBODY, "/bin/sh", "-c", script, "sh", str(tmp),
                               str(ROOT / ".venv" / "bin" / "python"), "-m", "uffdwp", *argv],
                              capture_output=True, text=True, timeout=timeout,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                   "ROOT": str(ROOT)})
    except subprocess.TimeoutExpired:
        raise AssertionError(f"`uffdwp {' '.join(argv)}` as uid {NOBODY} did not finish within "
                             f"{timeout} s") from None


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("switching to uid 65534 needs root")
    if not shutil.which("setpriv"):
        pytest.skip("no setpriv (util-linux) to run as another user")
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv/bin/uffdwp in this checkout (./bootstrap.sh --dev)")
    if Path("/proc/sys/vm/unprivileged_userfaultfd").read_text().strip() != "0":
        pytest.skip("vm.unprivileged_userfaultfd is not 0 here: any user may open one")
    dev = Path("/dev/userfaultfd")
    if dev.exists() and dev.stat().st_mode & 0o006:
        pytest.skip("/dev/userfaultfd is open to every user here")
    # Not under pytest's base directory: that one is 0700 root.
    tmp = Path(tempfile.mkdtemp(prefix="uffdwp-nobody-"))
    tmp.chmod(0o777)
    probe = _as_nobody(tmp, "--help", timeout=60)
    if probe.returncode:
        shutil.rmtree(tmp)
        pytest.skip(f"uid {NOBODY} cannot run this checkout's venv: {probe.stderr.strip()[:200]}")
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.timeout(300)
def test_run_as_nobody_says_what_to_change_and_what_it_unlocks(nobody_dir):
    report = nobody_dir / "report"
    proc = _as_nobody(nobody_dir, "run", "--report", str(report), "--jobs", "1", "-k",
                      "test_api or test_access or test_events", timeout=240)
    assert proc.returncode in (0, 4), describe(proc)
    last = proc.stdout.strip().splitlines()[-1]
    tests = json.loads((report / "results.json").read_text())["tests"]
    locked = [t for t in tests if t["verdict"] == "skip" and t["reason"].startswith(NO_UFFD)]
    assert locked, "no test was skipped for want of a userfaultfd: is uid 65534 privileged?"
    assert re.search(rf"\b{len(locked)} of {len(tests)} tests skipped for it would run", last), \
        last
    for needle in ("sysctl vm.unprivileged_userfaultfd=1", "/dev/userfaultfd", "0600 root:root",
                   "root", "UFFD_USER_MODE_ONLY"):
        assert needle in last, last
    run = json.loads((report / "run.json").read_text())
    assert run["unlock"] == last


@pytest.mark.timeout(300)
@pytest.mark.parametrize("argv", [
    ["probe"],
    ["snapshot", "demo", "--size", "4M", "--no-progress", "--to", "file:{dir}/x.img"],
    ["wrlat", "--demo"],
    ["bench", "roundtrip", "--pages", "16", "--rounds", "1"],
    ["bench", "soak", "--size", "4M", "--rounds", "1", "--dir", "{dir}"],
], ids=lambda a: " ".join(a[:2]))
def test_refusals_name_every_way_to_a_userfaultfd(nobody_dir, argv):
    proc = _as_nobody(nobody_dir, *[a.format(dir=nobody_dir) for a in argv])
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, describe(proc)
    text = " ".join((proc.stdout + proc.stderr).split())  # rich wraps probe's lines
    for needle in REMEDIES:
        assert needle in text, describe(proc)
