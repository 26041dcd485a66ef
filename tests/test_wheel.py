# SPDX-License-Identifier: GPL-2.0-only
"""An installed wheel runs its own suites: `pip install <checkout>` into a fresh venv outside
the checkout, then `uffdwp run` there finds the suites, their conftest and pytest.ini inside the
installed package (setup.py's TREE, uffdwp/tree.py), not in the checkout.

One test, ~25 s here (the build compiles the native module; PyPI for the dependencies): it
collects every suite from the installed package and runs one suite file through `uffdwp run`.
The whole run from a wheel is the suites' own job; here what matters is that it finds them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = re.compile(r"^(\d+) cases in (\d+) tests$", re.MULTILINE)


def _run(argv: list[str | Path], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    return proc


def _copy_tree(dest: Path) -> None:
    """The checkout as git sees it (tracked, plus new files it does not ignore), without .venv or
    build/: the wheel is built from the sources, not from a developer's leftovers."""
    # safe.directory: CI runs this as root in a checkout another user owns
    files = subprocess.run(["git", "-c", f"safe.directory={ROOT}", "-C", str(ROOT), "ls-files",
                            "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True)
    for name in filter(None, files.stdout.split("\0")):
        src = ROOT / name
        if src.is_file():  # a deleted file stays in the index until committed
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _cases(listing: str) -> tuple[int, int]:
    m = CASES.search(listing)
    assert m, listing[-2000:]
    return int(m.group(1)), int(m.group(2))


@pytest.mark.timeout(900)
@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed: no file list")
@pytest.mark.skipif(os.geteuid() != 0, reason="uffdwp run's suites need root (userfaultfd, "
                    "huge pages, swap)")
def test_installed_wheel_runs_its_suites(tmp_path):
    src, venv, elsewhere = tmp_path / "src", tmp_path / "venv", tmp_path / "elsewhere"
    for d in (src, elsewhere):
        d.mkdir()
    _copy_tree(src)
    _run([sys.executable, "-m", "venv", venv], tmp_path, 120)
    _run([venv / "bin/python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
          src], tmp_path, 600)
    shutil.rmtree(src)  # nothing of the checkout is left to fall back on
    uffdwp = venv / "bin/uffdwp"

    # Every suite collects from the installed package, as many cases as from the checkout.
    installed = _cases(_run([uffdwp, "run", "--list"], elsewhere, 120).stdout)
    checkout = _cases(_run([sys.executable, "-m", "uffdwp", "run", "--list"], ROOT, 120).stdout)
    assert installed == checkout

    report = elsewhere / "report"
    _run([uffdwp, "run", "--report", report, "-k", "test_api"], elsewhere, 300)
    results = json.loads((report / "results.json").read_text())
    ran = {t["verdict"] for t in results["tests"]}
    assert results["tests"] and ran <= {"pass", "skip"}, ran
    assert all(t["nodeid"].startswith("suites/test_api.py::") for t in results["tests"])
    # pytest ran in the installed package: its log names the venv's directory, not the checkout
    log = (report / "pytest.log").read_text()
    cwd = Path(log.splitlines()[1].removeprefix("# cwd "))
    assert cwd.is_relative_to(venv) and (cwd / "suites" / "conftest.py").is_file(), log[:500]
