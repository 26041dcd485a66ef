# SPDX-License-Identifier: GPL-2.0-only
"""Start pytest on the suites in a subprocess and follow the events its plugin appends.

A subprocess (rather than pytest.main in this process) keeps the parent free to draw progress,
survives a crashing test process, and gives pytest-xdist a clean interpreter to fork workers
from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import tree

PLUGIN = "uffdwp.runner.plugin"
MAX_WORKER_RESTART = 10_000


def default_suites() -> Path:
    """The checkout's suites, or installed, the copy the wheel carries (uffdwp/tree.py)."""
    return tree.SUITES_DIR


@dataclass
class PytestCommand:
    argv: list[str]
    cwd: Path


def pytest_command(suites: Path, events: Path, *, junit: Path | None = None,
                   jobs: str = "auto", extra: list[str] | tuple[str, ...] = (),
                   collect_only: bool = False, watchdog: Path | None = None) -> PytestCommand:
    """The pytest invocation: the repository's pytest.ini, our plugin, xdist unless jobs=1;
    with *watchdog* (a directory) a test outliving its bound is ended (runner/watchdog.py)."""
    root = tree.ROOT
    suites = suites.resolve()
    # Run from the repository so that node ids read "suites/test_x.py::..." as in the reports.
    cwd = root if suites.is_relative_to(root) else (suites if suites.is_dir() else suites.parent)
    target = os.path.relpath(suites, cwd)
    argv = [sys.executable, "-m", "pytest", target, "-p", PLUGIN, f"--uffdwp-events={events}",
            "-p", "no:cacheprovider", "--color=no", "-o", "junit_suite_name=uffdwp",
            "-o", "console_output_style=classic"]
    if cwd == root and tree.PYTEST_INI.exists():
        argv += ["-c", str(tree.PYTEST_INI), "--rootdir", str(root)]
    if collect_only:
        argv += ["--collect-only", "-q", "-p", "no:xdist"]
    else:
        # One broken suite file must not cost the results of all the others.
        argv += ["-v", "--continue-on-collection-errors"]
        if junit is not None:
            argv.append(f"--junitxml={junit}")
        # A worker the watchdog ended is replaced however many hang (xdist stops at 4 × jobs).
        argv += (["-p", "no:xdist"] if str(jobs) == "1"
                 else ["-n", str(jobs), f"--max-worker-restart={MAX_WORKER_RESTART}"])
        if watchdog is not None:
            argv.append(f"--uffdwp-watchdog={watchdog}")
    argv += list(extra)
    return PytestCommand(argv, cwd)


def follow(proc: subprocess.Popen, events: Path, *, poll: float = 0.1,
           on_idle: Callable[[], None] | None = None) -> Iterator[dict]:
    """Yield each event as the plugin appends it, until pytest exits and the file is drained."""
    buf = ""
    pos = 0
    while True:
        exited = proc.poll() is not None  # read after checking, so nothing written is missed
        try:
            with open(events, encoding="utf-8") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
        except FileNotFoundError:
            chunk = ""
        buf += chunk
        *lines, buf = buf.split("\n")
        for line in lines:
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    continue  # a torn line from a killed process: nothing to report
        if exited:
            return
        if not chunk:
            if on_idle is not None:
                on_idle()
            time.sleep(poll)


def start(cmd: PytestCommand, log: Path) -> subprocess.Popen:
    """Start pytest with its own output going to *log* (the report directory's pytest.log), in
    a process group of its own: a stop reaches its workers and their children as one."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log, "w", encoding="utf-8") as out:
        out.write("$ " + " ".join(cmd.argv) + f"\n# cwd {cmd.cwd}\n")
        out.flush()
        return subprocess.Popen(cmd.argv, cwd=cmd.cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
