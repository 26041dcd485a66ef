"""Write-fault latency: how long writers waited on UFFD-WP faults (after QEMU's
scripts/userfaultfd-wrlat.py, which times handle_userfault() with BCC).

Two sources:
  * the native writers' own per-store timings during a snapshot (the demo, or a stats JSON the
    demo saved): exact, no kernel tracing needed;
  * any process by PID, timing handle_userfault() with bpftrace kprobes, where the kernel has
    kprobes and bpftrace is installed. Where it does not, say so and fail.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .native import percentile


def log2_histogram_us(stalls_ns: Sequence[int]) -> list[int]:
    """Buckets of µs: bucket 0 holds [0, 1) µs, bucket i >= 1 holds [2^(i-1), 2^i) µs."""
    hist: list[int] = []
    for ns in stalls_ns:
        us = ns // 1000
        b = us.bit_length()
        if b >= len(hist):
            hist.extend([0] * (b + 1 - len(hist)))
        hist[b] += 1
    return hist


def format_histogram(hist: Sequence[int], unit: str = "usecs", width: int = 40) -> str:
    """The BCC/bpftrace-style table: range : count |stars|."""
    last = max((i for i, c in enumerate(hist) if c), default=-1)
    if last < 0:
        return f"{unit:>24} : count    distribution\n        (no samples)"
    peak = max(hist)
    lines = [f"{unit:>24} : count    distribution"]
    for i in range(last + 1):
        lo, hi = (0, 0) if i == 0 else (1 << (i - 1), (1 << i) - 1)  # whole µs, inclusive
        stars = "*" * round(width * hist[i] / peak) if peak else ""
        lines.append(f"{lo:>10} -> {hi:<10} : {hist[i]:<8} |{stars:<{width}}|")
    return "\n".join(lines)


def summary_line(stalls_ns: Sequence[int]) -> str:
    if not stalls_ns:
        return "no writer waited on a write-protect fault"
    def pct(q: float) -> float:
        return percentile(stalls_ns, q) / 1000

    return (f"{len(stalls_ns)} faulting stores: p50 {pct(0.5):.1f} us, p90 {pct(0.9):.1f} us, "
            f"p99 {pct(0.99):.1f} us, max {max(stalls_ns) / 1000:.1f} us")


def stalls_from_stats(path: str | Path) -> tuple[list[int], dict]:
    """The faulting stores' stalls from a stats JSON saved by `uffdwp snapshot demo`."""
    data = json.loads(Path(path).read_text())
    try:
        stalls = [s for w in data["writers"] for s in w["fault_stalls_ns"]]
    except (KeyError, TypeError):
        raise ValueError(f"{path} is not a stats file of `uffdwp snapshot demo "
                         "--stats-json`") from None
    return stalls, data


# --- kernel tracing of any process --------------------------------------------------------------
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

BPFTRACE_SCRIPT = r"""
kprobe:handle_userfault /pid == $1/ { @start[tid] = nsecs; }
kretprobe:handle_userfault /@start[tid]/ {
    @usecs = hist((nsecs - @start[tid]) / 1000);
    delete(@start[tid]);
}
interval:s:$2 { exit(); }
"""


def _kernel_config(option: str) -> str | None:
    """'y', 'm', 'n' (not set), or None when the config cannot be read."""
    release = os.uname().release
    for path in ("/proc/config.gz", f"/boot/config-{release}"):
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt") as f:
                for line in f:
                    if line.startswith(f"{option}="):
                        return line.split("=", 1)[1].strip()
                    if line.startswith(f"# {option} is not set"):
                        return "n"
            return "n"
        except OSError:
            continue
    return None


def kprobe_support() -> str | None:
    """None if handle_userfault() can be traced here, else why not (what to do)."""
    if _kernel_config("CONFIG_KPROBES") == "n":
        return ("this kernel is built without kprobes (CONFIG_KPROBES is not set), so "
                "handle_userfault() cannot be timed for another process: use "
                "`uffdwp wrlat --demo` or `--stats FILE` (the writers' own timings)")
    if os.geteuid() != 0:
        return "kernel tracing needs root (CAP_BPF/CAP_PERFMON and CAP_SYS_ADMIN)"
    if not shutil.which("bpftrace"):
        return ("bpftrace is not installed (apt install bpftrace), so handle_userfault() "
                "cannot be timed for another process")
    if not any(os.path.exists(f"{d}/kprobe_events") for d in TRACEFS):
        return ("no kprobe_events in tracefs (mount -t tracefs nodev /sys/kernel/tracing); "
                "the kernel may lack CONFIG_KPROBE_EVENTS")
    return None


def trace_pid(pid: int, seconds: int) -> tuple[int, str]:
    """Run bpftrace on *pid* for *seconds*; returns (exit status, its output)."""
    proc = subprocess.run(["bpftrace", "-e", BPFTRACE_SCRIPT, str(pid), str(seconds)],
                          capture_output=True, text=True, timeout=seconds + 60, check=False)
    return proc.returncode, proc.stdout + proc.stderr


__all__ = ["format_histogram", "kprobe_support", "log2_histogram_us", "stalls_from_stats",
           "summary_line", "trace_pid"]
