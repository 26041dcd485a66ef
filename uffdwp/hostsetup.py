# SPDX-License-Identifier: GPL-2.0-only
"""Host state the suites need (huge pages, a swap file), shared by concurrent pytest runs.

Each controlling pytest process joins on start and leaves at the end; the last one out restores
vm.nr_hugepages and removes the swap file. Members are PIDs, so a run that crashed does not pin
the state for ever: dead PIDs are pruned at the next join or leave.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
WANT_HUGEPAGES = 96  # enough for two workers' hugetlb cases, fork CoW copies included
SWAP_MB = 256
STATE_DIR = Path(os.environ.get("UFFDWP_STATE_DIR", "/run/uffdwp" if os.geteuid() == 0
                                else f"/tmp/uffdwp-{os.getuid()}"))
# Swap files and O_DIRECT need a real disk: /run is tmpfs on most machines, and so is a guest's
# root overlay, where UFFDWP_SCRATCH names the scratch disk (a directory that does not exist
# here means: not in that guest).
_SCRATCH = Path(os.environ.get("UFFDWP_SCRATCH", "/var/tmp"))
SCRATCH_DIR = _SCRATCH if _SCRATCH.is_dir() else Path("/var/tmp")
SWAP_FILE = SCRATCH_DIR / "uffdwp-swapfile"
_STATE = STATE_DIR / "state.json"
_LOCK = STATE_DIR / "state.lock"


@contextlib.contextmanager
def _locked_state() -> Iterator[dict]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = json.loads(_STATE.read_text())
        except (OSError, ValueError):
            state = {}
        state.setdefault("pids", [])
        state["pids"] = [p for p in state["pids"] if _alive(p)]
        yield state
        _STATE.write_text(json.dumps(state))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def join() -> None:
    """Reserve huge pages for this run (as root; otherwise hugetlb cases skip)."""
    if os.geteuid() != 0:
        return
    with _locked_state() as state:
        if not state["pids"]:
            try:
                # A run that crashed left its record of the original value: keep that one.
                state.setdefault("old_hugepages", int(NR_HUGEPAGES.read_text()))
                if int(NR_HUGEPAGES.read_text()) < WANT_HUGEPAGES:
                    NR_HUGEPAGES.write_text(str(WANT_HUGEPAGES))
            except OSError:
                state.pop("old_hugepages", None)
        state["pids"].append(os.getpid())


def leave(pid: int | None = None) -> None:
    """*pid* (this process by default) is done with the host state: the last one out restores
    it. `uffdwp run` calls leave(<its pytest>) after that pytest ended however it ended
    (killed included), so the host is restored at once, not only by the next run."""
    if os.geteuid() != 0:
        return
    pid = os.getpid() if pid is None else pid
    with _locked_state() as state:
        state["pids"] = [p for p in state["pids"] if p != pid]
        if state["pids"]:
            return
        old = state.pop("old_hugepages", None)
        if old is not None:
            with contextlib.suppress(OSError):
                NR_HUGEPAGES.write_text(str(old))
        if state.pop("swap", False):
            subprocess.run(["swapoff", str(SWAP_FILE)], capture_output=True, check=False)
            SWAP_FILE.unlink(missing_ok=True)


def ensure_swap() -> str | None:
    """Activate the shared swap file; returns None, or why it cannot be had."""
    if os.geteuid() != 0:
        return "a swap file needs root (swapon)"
    with _locked_state() as state:
        active = subprocess.run(["swapon", "--show=NAME", "--noheadings"], capture_output=True,
                                text=True, check=False).stdout.split()
        if str(SWAP_FILE) in active:
            return None
        steps = [["fallocate", "-l", f"{SWAP_MB}M", str(SWAP_FILE)],
                 ["chmod", "600", str(SWAP_FILE)], ["mkswap", str(SWAP_FILE)],
                 ["swapon", str(SWAP_FILE)]]
        for step in steps:
            res = subprocess.run(step, capture_output=True, text=True, check=False)
            if res.returncode:
                SWAP_FILE.unlink(missing_ok=True)
                return f"cannot set up a swap file ({' '.join(step)}: {res.stderr.strip()})"
        state["swap"] = True
    return None
