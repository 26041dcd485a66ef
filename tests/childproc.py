# SPDX-License-Identifier: GPL-2.0-only
"""Run Python code in a child process, so that a crash (SIGSEGV) or a hang fails the test that
caused it instead of taking the whole run down with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, *, timeout: float = 60, args: tuple[str, ...] = (),
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """*code* run by this interpreter in a child; its output is returned, a hang killed."""
    environ = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env=environ)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the child did not finish within {timeout}s (a hang); "
                             f"stderr: {exc.stderr!r}") from None


def run_cli(*argv: str, timeout: float = 60, stdin: str | None = None
            ) -> subprocess.CompletedProcess:
    """`uffdwp ARGV…` in a child, as a user would run it."""
    try:
        return subprocess.run([sys.executable, "-m", "uffdwp", *argv], capture_output=True,
                              text=True, timeout=timeout, cwd=ROOT, input=stdin,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    except subprocess.TimeoutExpired:
        raise AssertionError(f"`uffdwp {' '.join(argv)}` did not finish within {timeout}s "
                             "(a hang)") from None


def describe(proc: subprocess.CompletedProcess) -> str:
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        return f"the child died of {name}; stderr:\n{proc.stderr[-2000:]}"
    return f"exit {proc.returncode}; stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}"


def assert_ok(proc: subprocess.CompletedProcess) -> str:
    """The child exited 0 without a traceback; returns its standard output."""
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, describe(proc)
    return proc.stdout


def assert_clear_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A CLI failure as a user must see it: non-zero exit, no traceback, one error line that
    says each of *needles*."""
    assert proc.returncode > 0, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, describe(proc)
    for needle in needles:
        assert needle.lower() in errors[0].lower(), describe(proc)
    return errors[0]
