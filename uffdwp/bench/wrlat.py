# SPDX-License-Identifier: GPL-2.0-only
"""Write-fault latency: how long writers waited on UFFD-WP faults (after QEMU's
scripts/userfaultfd-wrlat.py, which times handle_userfault() with BCC).

Two sources:
  * the native writers' own per-store timings during a snapshot (the demo, or a stats JSON the
    demo saved): exact, no kernel tracing needed;
  * any process by PID, timing handle_userfault() with bpftrace kprobes, where the kernel has
    kprobes and bpftrace is installed. Where it does not, say so and fail.

bpftrace rather than BCC: it is a Debian package that needs neither kernel headers nor a
compiler at run time (BCC compiles C against the running kernel's headers, which a guest
booted from a bare Debian kernel package does not have).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


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


def log2_bucket_bounds(b: int) -> tuple[int, int]:
    """[lo, hi) of bucket *b* of a log2 histogram as above (bpftrace's hist() has the same)."""
    return (0, 1) if b == 0 else (1 << (b - 1), 1 << b)


def log2_quantile(hist: Sequence[int], q: float, unit: float = 1.0) -> float | None:
    """The *q* quantile of a log2 histogram, interpolated log-linearly inside its bucket (the
    true value lies in that bucket: within a factor of two of the estimate), times *unit*.
    None without samples."""
    total = sum(hist)
    if not total:
        return None
    rank = q * total
    seen = 0
    for b, count in enumerate(hist):
        if count and seen + count >= rank:
            lo, hi = log2_bucket_bounds(b)
            frac = (rank - seen) / count
            if lo == 0:
                return frac * hi * unit
            return lo * math.pow(hi / lo, frac) * unit
        seen += count
    return log2_bucket_bounds(len(hist) - 1)[1] * unit


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
KPROBE_PMU = "/sys/bus/event_source/devices/kprobe"  # perf's kprobe PMU (4.17+), bpftrace's way in
READY = "uffdwp-wrlat: tracing"

# BEGIN fires once every probe is attached: the READY line says tracing has begun.
BPFTRACE_SCRIPT = r"""
BEGIN { printf("READY\n"); }
kprobe:handle_userfault /pid == $1/ { @start[tid] = nsecs; }
kretprobe:handle_userfault /@start[tid]/ {
    @usecs = hist((nsecs - @start[tid]) / 1000);
    delete(@start[tid]);
}
END { clear(@start); }
""".replace("READY", READY)


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


def _kallsyms_has(symbol: str) -> bool | None:
    try:
        with open("/proc/kallsyms") as f:
            return any(line.split()[2:3] == [symbol] for line in f)
    except OSError:
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
    if not os.path.exists(KPROBE_PMU) and not any(
            os.path.exists(f"{d}/kprobe_events") for d in TRACEFS):
        return ("neither perf's kprobe PMU nor tracefs kprobe_events is there (mount -t "
                "tracefs nodev /sys/kernel/tracing); the kernel may lack CONFIG_KPROBE_EVENTS")
    if _kallsyms_has("handle_userfault") is False:
        return "handle_userfault is not in /proc/kallsyms: nothing to attach to"
    return None


_BUCKET = re.compile(r"^\[(\d+)([KMGTPE]?)(?:, (\d+)([KMGTPE]?)\))?\]?\s+(\d+)\s+\|")
_SUFFIX = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}


def parse_bpftrace_hist(text: str, name: str = "@usecs") -> list[int]:
    """The buckets of a bpftrace hist() map as a log2 histogram (bucket 0: value 0; b: values
    [2^(b-1), 2^b)). [] when the map is absent (nothing was recorded)."""
    hist: list[int] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("@"):
            inside = line.split(":", 1)[0] == name
            continue
        m = _BUCKET.match(line.strip()) if inside else None
        if not m:
            continue
        lo = int(m.group(1)) << _SUFFIX[m.group(2)]
        b = lo.bit_length()
        if b >= len(hist):
            hist.extend([0] * (b + 1 - len(hist)))
        hist[b] += int(m.group(5))
    return hist


@dataclass
class TraceResult:
    pid: int
    seconds: float
    histogram_us: list[int]  # log2 buckets of microseconds in handle_userfault()
    ended_by: str  # "exit" (the process ended) | "duration" | "interrupt"
    bpftrace_status: int
    output: str  # bpftrace's own output, for when it failed

    @property
    def count(self) -> int:
        return sum(self.histogram_us)

    def quantile_us(self, q: float) -> float | None:
        return log2_quantile(self.histogram_us, q)

    def as_dict(self) -> dict:
        return {"pid": self.pid, "seconds": round(self.seconds, 3), "count": self.count,
                "histogram_us": self.histogram_us, "ended_by": self.ended_by,
                "p50_us": self.quantile_us(0.5), "p90_us": self.quantile_us(0.9),
                "p99_us": self.quantile_us(0.99), "bpftrace_status": self.bpftrace_status}


class Tracer:
    """bpftrace timing handle_userfault() for one process; start() returns once it traces."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.proc: subprocess.Popen | None = None
        self.t0 = 0.0
        self._head = ""

    def start(self, timeout: float = 300.0) -> None:
        """Attach (bpftrace compiles the script first: seconds on an emulated CPU)."""
        self.proc = subprocess.Popen(
            ["bpftrace", "-e", BPFTRACE_SCRIPT, str(self.pid)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)  # a ^C in the terminal reaches bpftrace only through us
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        os.set_blocking(fd, False)
        deadline = time.monotonic() + timeout
        head = b""
        while READY.encode() not in head:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                chunk = None
            if chunk:
                head += chunk
                continue
            if chunk == b"" or self.proc.poll() is not None:  # EOF: bpftrace is gone
                self.proc.wait()
                text = head.decode(errors="replace").strip()
                raise RuntimeError(f"bpftrace exited ({self.proc.returncode}) before tracing: "
                                   + " / ".join(text.splitlines()[-3:]))
            if time.monotonic() > deadline:
                self._head = head.decode(errors="replace")
                self.stop()
                raise RuntimeError(f"bpftrace did not attach within {timeout:.0f} s")
            time.sleep(0.05)
        self._head = head.decode(errors="replace")
        self.t0 = time.monotonic()

    def stop(self, ended_by: str = "interrupt") -> TraceResult:
        """SIGINT bpftrace: it prints its maps and exits."""
        assert self.proc is not None and self.proc.stdout is not None
        seconds = time.monotonic() - self.t0 if self.t0 else 0.0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        os.set_blocking(self.proc.stdout.fileno(), True)
        try:
            rest, _ = self.proc.communicate(timeout=300)  # minutes on an emulated CPU
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        out = self._head + (rest or b"").decode(errors="replace")
        return TraceResult(self.pid, seconds, parse_bpftrace_hist(out), ended_by,
                           self.proc.returncode, out)

    def wait(self, duration: float | None) -> TraceResult:
        """Until the traced process exits, *duration* seconds pass, or ^C; then stop()."""
        ended_by = "exit"
        try:
            while _alive(self.pid):
                if duration is not None and time.monotonic() - self.t0 >= duration:
                    ended_by = "duration"
                    break
                time.sleep(0.1)
        except KeyboardInterrupt:
            ended_by = "interrupt"
        # a second ^C while bpftrace prints its maps must not lose them
        try:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread: signals are not ours to set
            return self.stop(ended_by)
        try:
            return self.stop(ended_by)
        finally:
            signal.signal(signal.SIGINT, previous)


def _alive(pid: int) -> bool:
    """Whether *pid* still runs (a zombie has exited: its faults are over)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def trace_pid_command(pid: int, duration: float | None, as_json: bool) -> int:
    """`uffdwp wrlat --pid`: trace until the process exits, *duration* or ^C; print the log2
    histogram of µs in handle_userfault() (or JSON). Exit status 3 where tracing cannot work."""
    reason = kprobe_support()
    if reason:
        print(f"uffdwp: error: cannot trace pid {pid}: {reason}", file=sys.stderr)
        return 3
    if not _alive(pid):
        print(f"uffdwp: error: no process {pid}", file=sys.stderr)
        return 1
    tracer = Tracer(pid)
    try:
        tracer.start()
    except RuntimeError as exc:
        print(f"uffdwp: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        tracer.stop()
        return 130
    print(f"tracing handle_userfault() of pid {pid}"
          + (f" for up to {duration:g} s" if duration else "") + " (Ctrl-C to stop)",
          file=sys.stderr, flush=True)
    res = tracer.wait(duration)
    if res.bpftrace_status not in (0, -signal.SIGINT) and not res.histogram_us:
        print(f"uffdwp: error: bpftrace failed ({res.bpftrace_status}): "
              + " / ".join(res.output.strip().splitlines()[-3:]), file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(res.as_dict()))
        return 0
    print(format_histogram(res.histogram_us))
    p50, p99 = res.quantile_us(0.5), res.quantile_us(0.99)
    print(f"{res.count} waits in handle_userfault() over {res.seconds:.1f} s ({res.ended_by})"
          + (f": p50 ~{p50:.1f} us, p99 ~{p99:.1f} us (log2-bucket estimates)"
             if p50 is not None and p99 is not None else ""))
    return 0


__all__ = ["TraceResult", "Tracer", "format_histogram", "kprobe_support", "log2_histogram_us",
           "log2_quantile", "parse_bpftrace_hist", "stalls_from_stats",
           "trace_pid_command"]
