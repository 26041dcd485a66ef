# SPDX-License-Identifier: GPL-2.0-only
"""The run-level watchdog of `uffdwp run`: a test that outlives its bound is ended from outside.

pytest-timeout's signal method cannot interrupt a thread blocked in a page fault that a
misbehaving kernel never resolves (the Python signal handler only runs between bytecodes), so
the pytest process that runs the tests could hang for ever. Here:

- every process that runs tests (an xdist worker) keeps a beacon, ``<dir>/<pid>.json``: the
  test it runs, its phase and since when, and the test's bound (pytest-timeout's setting). Its
  fatal-signal report (faulthandler: the signal and every thread's Python stack) goes to
  ``<dir>/<pid>.trace``;
- the controlling process watches the beacons from a thread. A test still running
  grace() seconds after its bound gets SIGABRT (faulthandler writes where each thread was;
  a thread waiting in a fault is interrupted for the handler), then SIGKILL. xdist sees its
  worker crash, reports the test as crashed and starts a new worker;
- the crash report of such a test is turned into ``hung in <phase>`` (or ``crashed (SIGSEGV)
  in <phase>`` for a worker that died of a signal on its own), with its last progress: the
  test's own frame where it stopped and what the kernel had it wait in.

Without xdist (``uffdwp run -j 1``) the one process arms faulthandler's own timer instead,
which dumps the stacks and exits: the run stops there, and the test is reported the same way.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

GRACE = 10.0  # at most this many seconds past a test's bound (and at most the bound itself):
# pytest-timeout's own failure comes first where it can


def grace(bound: float) -> float:
    return min(GRACE, bound)
KILL_WAIT = 2.0  # seconds between SIGABRT (stack dump) and SIGKILL
POLL = 0.5


# --- in the process that runs the tests ------------------------------------------------------
class Beacon:
    """Keeps ``<dir>/<pid>.json`` saying which test this process runs, in which phase."""

    def __init__(self, directory: Path, *, self_kill: bool) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.pid = os.getpid()
        self.path = directory / f"{self.pid}.json"
        self._trace: IO[str] = open(directory / f"{self.pid}.trace", "w")  # noqa: SIM115
        self._self_kill = self_kill  # no controller to end this process: faulthandler's timer
        self._state: dict[str, Any] = {}
        self._bound: float | None = None

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # after pytest's faulthandler plugin enabled its own (configure): this file wins
        faulthandler.enable(self._trace, all_threads=True)

    def _write(self, **changes: Any) -> None:
        self._state.update(changes, pid=self.pid)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state))
        os.replace(tmp, self.path)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self, nodeid: str, location: object) -> None:
        self._state = {}
        self._write(nodeid=nodeid, phase="setup", started=time.time(), bound=self._bound)

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any) -> None:
        # called as the test's protocol starts, before its logstart
        bound = self._bound = float(settings.timeout or 0) or None
        if bound and self._self_kill:
            faulthandler.dump_traceback_later(bound + grace(bound), exit=True, file=self._trace)
        # returns None: pytest-timeout still sets its own timer

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> None:
        self._write(phase="call")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        self._write(phase="teardown")

    def pytest_runtest_logfinish(self, nodeid: str, location: object) -> None:
        if self._self_kill:
            faulthandler.cancel_dump_traceback_later()
        self._bound = None
        self._write(nodeid=None, phase=None)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        faulthandler.disable()
        self._trace.close()
        self.path.unlink(missing_ok=True)


# --- in the controlling process ---------------------------------------------------------------
def _beacons(directory: Path) -> list[dict]:
    out = []
    for path in directory.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(path.read_text()))
    return out


def kernel_waits(pid: int) -> list[str]:
    """Where the kernel has the process's threads wait (/proc/<pid>/task/*/wchan), e.g.
    handle_userfault: what the test was stuck on, said by the kernel."""
    waits: set[str] = set()
    for wchan in Path(f"/proc/{pid}/task").glob("*/wchan"):
        with contextlib.suppress(OSError):
            name = wchan.read_text().strip()
            if name and name != "0":
                waits.add(name)
    # a worker's idle threads wait on pipes, futexes, poll: a fault wait is what matters
    return sorted(w for w in waits if "userfault" in w) or sorted(waits)


class Watchdog:
    """Ends the workers whose test outlived its bound; says why a worker's test crashed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.killed: dict[str, dict] = {}  # nodeid -> what the watchdog saw as it killed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="uffdwp-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(KILL_WAIT + 1)

    def _watch(self) -> None:
        while not self._stop.wait(POLL):
            now = time.time()
            for b in _beacons(self.directory):
                if not b.get("nodeid") or not b.get("bound") or b["nodeid"] in self.killed:
                    continue
                if now > b["started"] + b["bound"] + grace(b["bound"]) and _running(b["pid"]):
                    self._end(b, now)

    def _end(self, beacon: dict, now: float) -> None:
        pid = beacon["pid"]
        self.killed[beacon["nodeid"]] = dict(beacon, seconds=now - beacon["started"],
                                             waits=kernel_waits(pid))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGABRT)  # faulthandler: every thread's stack, then it dies
        deadline = time.monotonic() + KILL_WAIT
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def crash_reason(self, nodeid: str) -> str | None:
        """Why *nodeid*'s worker died, or None if no beacon knows the test."""
        return crash_reason(self.directory, nodeid, self.killed.get(nodeid))


def _running(pid: int) -> bool:
    """Alive and not a zombie (a dead worker stays one until execnet reaps it; a crashed
    worker's beacon still names its test)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


_FATAL = re.compile(r"Fatal Python error: (.+)")
_FRAME = re.compile(r'File "([^"]+)", line (\d+) in (\S+)')
_SIGNALS = {"Segmentation fault": "SIGSEGV", "Bus error": "SIGBUS", "Aborted": "SIGABRT",
            "Floating-point exception": "SIGFPE", "Illegal instruction": "SIGILL"}


def last_progress(trace: str, nodeid: str) -> str:
    """The test's own frame (its file's deepest line) in a faulthandler dump, else the deepest
    frame of any thread: where the test stopped making progress."""
    test_file = nodeid.split("::", 1)[0]
    frames = _FRAME.findall(trace)
    mine = [f for f in frames if f[0].endswith(test_file)]
    pick = (mine or [f for f in frames if "/_pytest/" not in f[0] and "/pluggy/" not in f[0]]
            or frames)
    if not pick:
        return ""
    path, line, func = pick[0]
    return f"{_short(path)}:{line} in {func}"


def _short(path: str) -> str:
    for root in ("/suites/", "/tests/", "/uffdwp/"):
        if root in path:
            return root[1:] + path.split(root, 1)[1]
    return path


def crash_reason(directory: Path, nodeid: str, killed: dict | None = None) -> str | None:
    beacon = killed or next((b for b in _beacons(directory) if b.get("nodeid") == nodeid), None)
    if beacon is None:
        return None
    try:
        trace = (directory / f"{beacon['pid']}.trace").read_text(errors="replace")
    except OSError:
        trace = ""
    phase = beacon.get("phase") or "setup"
    fatal = _FATAL.search(trace)
    if killed is not None or re.search(r"^Timeout \(", trace, re.M):  # or faulthandler's timer
        bound = beacon.get("bound") or 0
        head = f"hung in {phase}: no result {bound:g}+{grace(bound):g} s after it started"
    elif fatal:
        sig = _SIGNALS.get(fatal.group(1).strip(), fatal.group(1).strip())
        head = f"crashed ({sig}) in {phase}"
    else:
        head = f"its worker died in {phase} (no fatal-signal report: killed from outside?)"
    progress = last_progress(trace, nodeid)
    parts = [head]
    if progress:
        parts.append(f"last progress: {progress}")
    if killed and killed.get("waits"):
        parts.append("kernel wait: " + ", ".join(killed["waits"]))
    return "; ".join(parts)
