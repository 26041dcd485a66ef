# SPDX-License-Identifier: GPL-2.0-only
"""QEMU's own background snapshot of a guest writing at full speed, restored and checked.

One run, on one memory backend:
  1. boot the writer guest; time the writer undisturbed (its rdtsc histogram and rate);
  2. background snapshot (`background-snapshot` capability, `migrate exec:cat > IMAGE`) while it
     writes, with `uffdwp wrlat --pid` tracing QEMU where the kernel allows it;
  3. control: a dump of the running guest (no write tracking; QMP pmemsave, else a read of
     QEMU's RAM through /proc/PID/mem) — must NOT be a cut;
  4. baseline: a plain precopy `migrate` of the same guest to a second image;
  5. restore the snapshot in a second QEMU (-incoming), check its RAM is a consistent cut of the
     writer's sequence, resume it and check the writer goes on from there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..bench import wrlat
from . import bootblock
from .bootblock import START, Status, histogram_delta
from .cut import CutReport, check_cut
from .vm import ExecuteError, Guest, GuestConfig, GuestError, set_capability

MIB = 1 << 20
UNLIMITED_BANDWIDTH = 1 << 40  # bytes/s: 7.2's default of 32 MiB/s would pace the snapshot
# Precopy of a guest that re-dirties all of its RAM converges only if the whole RAM fits in the
# downtime allowed; 10 s makes it end after its first pass, in any guest this module boots.
PRECOPY_DOWNTIME_MS = 10_000
# Stores slower than what 99 % of undisturbed stores take may have been slowed by the snapshot.
UNDISTURBED_QUANTILE = 0.99


@dataclass
class Timing:
    """Durations in seconds, measured by this process around the QMP commands."""

    boot: float = 0.0
    snapshot: float = 0.0
    restore: float = 0.0
    precopy: float = 0.0
    total: float = 0.0


@dataclass
class WriterTimings:
    """The guest writer's own page-store stalls, from its rdtsc histograms."""

    ticks_per_us: float
    passes_per_s: float  # undisturbed
    undisturbed: list[int]  # log2 buckets of rdtsc ticks, over `undisturbed_s`
    undisturbed_s: float
    during: list[int]  # the same, between the start and the end of the snapshot
    threshold_bucket: int  # first bucket above the undisturbed UNDISTURBED_QUANTILE
    added: list[int]  # stores the snapshot slowed: `during` beyond the undisturbed rate
    wall_ticks_per_us: float = 0.0  # the host's view of the rate (TSC delta over its wall time)

    @property
    def added_count(self) -> int:
        return sum(self.added)

    def slowest(self, n: int) -> list[int]:
        """The *n* longest stalls of `added` (whole buckets from the top; the bucket where the
        n-th falls partly)."""
        out = [0] * len(self.added)
        left = n
        for b in range(len(self.added) - 1, -1, -1):
            take = min(left, self.added[b])
            out[b], left = take, left - take
        return out

    def quantile_us(self, hist: list[int], q: float) -> float | None:
        return wrlat.log2_quantile(hist, q, 1 / self.ticks_per_us)

    def to_us(self, hist: list[int]) -> list[int]:
        """A tick histogram rebucketed to log2 µs by each bucket's geometric middle (for
        display beside wrlat's; quantiles come from the tick buckets themselves)."""
        out: list[int] = []
        for b, n in enumerate(hist):
            if not n:
                continue
            lo, hi = wrlat.log2_bucket_bounds(b)
            us = ((lo * hi) ** 0.5 if lo else hi / 2) / self.ticks_per_us
            k = int(us).bit_length()
            out.extend([0] * (k + 1 - len(out)))
            out[k] += n
        return out


def snapshot_added(undisturbed: list[int], during: list[int]) -> tuple[int, list[int]]:
    """(threshold bucket, histogram of the stores the snapshot slowed down).

    Above the first bucket past the undisturbed UNDISTURBED_QUANTILE, what the snapshot window
    holds beyond the undisturbed share of such stalls (scaled by the windows' store counts) was
    added by the snapshot: waits in handle_userfault(), and write faults on pages just
    unprotected."""
    n_u, n_d = sum(undisturbed), sum(during)
    if not n_u:
        return len(during), [0] * len(during)
    seen, thr = 0, len(undisturbed)
    for b, c in enumerate(undisturbed):
        seen += c
        if seen >= UNDISTURBED_QUANTILE * n_u:
            thr = b + 1
            break
    scale = n_d / n_u
    base = [*undisturbed, *[0] * max(0, len(during) - len(undisturbed))]
    added = [0 if b < thr else max(0, c - round(base[b] * scale)) for b, c in enumerate(during)]
    return thr, added


@dataclass
class ScenarioResult:
    memory: str
    ram_mib: int
    qemu_version: str
    kernel: str
    refused: str | None = None  # QEMU's error when it refused the background snapshot
    timing: Timing = field(default_factory=Timing)
    snapshot_info: dict = field(default_factory=dict)  # QEMU's last query-migrate
    image_bytes: int = 0
    precopy_info: dict = field(default_factory=dict)
    precopy_bytes: int = 0
    passes_before: int = 0  # writer passes completed when the snapshot started
    passes_after: int = 0  # ... and when it completed
    restored: str = ""  # str(CutReport) of the restored RAM
    restored_ok: bool = False
    restored_status_passes: int = -1  # the status page's count in the restored RAM
    resumed: str = ""  # the restored guest after running on for a while
    resumed_ok: bool = False
    control: list[str] = field(default_factory=list)  # "pmemsave|proc: <CutReport>" per dump
    control_failed: bool = False  # a dump was NOT a cut (what the control must show)
    control_passes: list[int] = field(default_factory=list)  # writer passes during each dump
    paused_dump: str = ""  # the same dump with the guest paused
    paused_dump_ok: bool = False
    writer: WriterTimings | None = None
    wrlat: dict | None = None  # `uffdwp wrlat --pid QEMU --json`, where it can trace
    wrlat_skipped: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        w = self.writer
        if w is not None:
            d["writer"].update(added_count=w.added_count,
                               added_p50_us=w.quantile_us(w.added, 0.5),
                               added_us=w.to_us(w.added))
            if self.wrlat is not None:
                # the same events on both sides: the guest's N longest added stalls, N = the
                # waits wrlat counted in handle_userfault()
                top = w.slowest(int(self.wrlat["count"]))
                d["writer"].update(slowest_n=sum(top), slowest_p50_us=w.quantile_us(top, 0.5),
                                   slowest_us=w.to_us(top))
        return d


class WrlatProcess:
    """`uffdwp wrlat --pid PID --json` in a child process: started, then stopped with SIGINT."""

    def __init__(self, pid: int, log: Path) -> None:
        self.pid = pid
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float) -> None:
        self.err = open(self.log, "w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uffdwp", "wrlat", "--pid", str(self.pid), "--json"],
            stdout=subprocess.PIPE, stderr=self.err, text=True)
        deadline = time.monotonic() + timeout
        while "tracing handle_userfault()" not in Path(self.log).read_text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"uffdwp wrlat exited ({self.proc.returncode}): "
                                   + Path(self.log).read_text().strip()[-300:])
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"uffdwp wrlat did not attach within {timeout:.0f} s")
            time.sleep(0.1)

    def stop(self, wait_exit: float = 0.0) -> dict:
        """Its result; after *wait_exit* s for it to end by itself (the traced process ended),
        else at once, by SIGINT."""
        assert self.proc is not None
        try:
            out, _ = self.proc.communicate(timeout=wait_exit or None) if wait_exit else ("", "")
        except subprocess.TimeoutExpired:
            out = ""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                out, _ = self.proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, _ = self.proc.communicate()
        self.err.close()
        if self.proc.returncode != 0:
            raise RuntimeError(f"uffdwp wrlat exited {self.proc.returncode}: "
                               + Path(self.log).read_text().strip()[-300:])
        return json.loads(out.strip().splitlines()[-1])


def run_scenario(workdir: Path, memory: str = "anon", ram_mib: int = 32, *,
                 trace: bool = True, settle_s: float = 0.5, resume_s: float = 0.3,
                 timeout: float = 120.0, log=None) -> ScenarioResult:
    """Run steps 1-5 (module docstring); QEMU's refusal of the snapshot ends it after step 1."""
    from .vm import qemu_version

    say = log or (lambda _msg: None)
    t_start = time.monotonic()
    workdir = Path(workdir)
    image = bootblock.build(ram_mib * MIB, workdir)
    cfg = GuestConfig(image, ram_mib, memory)
    res = ScenarioResult(memory, ram_mib, ".".join(map(str, qemu_version())),
                         os.uname().release)
    bg_img, pre_img = workdir / f"bg-{memory}.img", workdir / f"precopy-{memory}.img"
    with Guest(cfg, workdir, f"src-{memory}", timeout=timeout) as src:
        tracer = None
        if trace:
            why = wrlat.kprobe_support()
            if why:
                res.wrlat_skipped = why
            else:  # attach while QEMU idles (-S): bpftrace starts slowly on an emulated CPU
                tracer = WrlatProcess(src.pid, workdir / f"wrlat-{memory}.log")
                t0 = time.monotonic()
                tracer.start(timeout)
                say(f"wrlat attached in {time.monotonic() - t0:.1f} s")
        t_boot = time.monotonic()
        src.cmd("cont")
        src.wait_writer(2, timeout)
        res.timing.boot = time.monotonic() - t_boot
        say(f"booted in {res.timing.boot:.1f} s")
        # 1. the writer undisturbed: rate, tick rate, stall histogram
        a, ta = src.status(), time.monotonic()
        time.sleep(settle_s)
        b, tb = src.status(), time.monotonic()
        # The rate from the guest's own calibration against the 8254: the host's view (TSC
        # delta over wall time) is off by however long the writer went unscheduled before each
        # reading, which was 2x once in a loaded nested guest.
        ticks_per_us = b.ticks_per_us
        wall_ticks_per_us = (b.last_tsc - a.last_tsc) / ((tb - ta) * 1e6)
        if not 100 <= ticks_per_us <= 100_000:
            raise GuestError(f"the guest's rdtsc calibration gave {ticks_per_us:.1f} ticks/us "
                             f"(host's view {wall_ticks_per_us:.0f})")
        undisturbed = histogram_delta(a, b)
        say(f"writer: {(b.passes - a.passes) / (tb - ta):.1f} passes/s, "
            f"rdtsc {ticks_per_us:.0f} ticks/us (host's view {wall_ticks_per_us:.0f})")
        # control (step 3): dumps of the running guest without write tracking. pmemsave runs
        # in QEMU's main loop under its big lock; under nested TCG the vCPU was seen not to
        # write during it, so /proc/PID/mem, outside QEMU, is the second way.
        for via in ("pmemsave", "pmemsave", "proc", "proc"):
            p0 = src.status().passes
            rep = check_cut(src.ram(via), START)
            res.control_passes.append(src.status().passes - p0)
            res.control.append(f"{via}: {rep}")
            if not rep.ok:
                res.control_failed = True
                break
        # ... and the same dump of the paused guest is a cut: the check accepts a real instant
        src.cmd("stop")
        rep = check_cut(src.ram("proc"), START)
        _status_agrees(rep, src.status())
        res.paused_dump, res.paused_dump_ok = str(rep), rep.ok
        src.cmd("cont")
        # 2. background snapshot
        try:
            set_capability(src, "background-snapshot")
        except ExecuteError as exc:
            res.refused = str(exc)
            if tracer is not None:
                res.wrlat = tracer.stop()
            still = src.wait_writer(b.passes + 2, timeout)  # the guest must go on regardless
            res.passes_after = still.passes
            res.timing.total = time.monotonic() - t_start
            return res
        src.cmd("migrate-set-parameters", **{"max-bandwidth": UNLIMITED_BANDWIDTH})
        s0, t0 = src.status(), time.monotonic()
        try:
            res.snapshot_info = src.migrate(f"exec:cat > {bg_img}", timeout)
        finally:
            res.timing.snapshot = time.monotonic() - t0
        s1 = src.status()
        if tracer is not None:
            # the guest paused meanwhile: bpftrace needs the CPU to print and detach
            src.cmd("stop")
            res.wrlat = tracer.stop()
            src.cmd("cont")
            say(f"wrlat: {res.wrlat['count']} waits, p50 {res.wrlat['p50_us']} us")
        if res.snapshot_info.get("status") != "completed":
            raise GuestError(f"background snapshot {res.snapshot_info.get('status')}: "
                             f"{res.snapshot_info.get('error-desc', '')}")
        res.image_bytes = bg_img.stat().st_size
        res.passes_before, res.passes_after = s0.passes, s1.passes
        during = histogram_delta(s0, s1)
        thr, added = snapshot_added(undisturbed, during)
        res.writer = WriterTimings(ticks_per_us, (b.passes - a.passes) / (tb - ta),
                                   undisturbed, tb - ta, during, thr, added, wall_ticks_per_us)
        say(f"snapshot {res.timing.snapshot:.2f} s, {res.image_bytes / MIB:.1f} MiB")
        # 4. baseline: plain precopy of the same guest (it ends stopped)
        set_capability(src, "background-snapshot", False)
        src.cmd("migrate-set-parameters", **{"downtime-limit": PRECOPY_DOWNTIME_MS})
        t0 = time.monotonic()
        res.precopy_info = src.migrate(f"exec:cat > {pre_img}", timeout)
        res.timing.precopy = time.monotonic() - t0
        res.precopy_bytes = pre_img.stat().st_size if pre_img.exists() else 0
        say(f"precopy {res.timing.precopy:.2f} s, {res.precopy_bytes / MIB:.1f} MiB")
    # 5. restore into a second QEMU, check, resume, check again
    with Guest(cfg, workdir, f"dst-{memory}", incoming=True, timeout=timeout) as dst:
        t0 = time.monotonic()
        state = dst.incoming(f"exec:cat {bg_img}", timeout)
        res.timing.restore = time.monotonic() - t0
        say(f"restored in {res.timing.restore:.2f} s")
        if state != "paused":
            raise GuestError(f"restored guest is {state!r}, not paused: {dst.stderr()[-300:]}")
        st = dst.status()
        rep = check_cut(dst.ram(), START)
        res.restored_status_passes = st.passes
        _status_agrees(rep, st)
        res.restored, res.restored_ok = str(rep), rep.ok
        dst.cmd("cont")
        dst.wait_writer(st.passes + 2, timeout)
        time.sleep(resume_s)
        dst.cmd("stop")
        st2 = dst.status()
        rep2 = check_cut(dst.ram(), START)
        _status_agrees(rep2, st2)
        if rep2.ok and rep2.passes[1] <= rep.passes[0]:
            rep2.add(f"resumed writer at pass {rep2.passes[1]}, not past the restored "
                     f"{rep.passes[0]}")
        res.resumed, res.resumed_ok = str(rep2), rep2.ok
    for img in (bg_img, pre_img):
        img.unlink(missing_ok=True)
    res.timing.total = time.monotonic() - t_start
    return res


def _status_agrees(rep: CutReport, st: Status) -> None:
    """The status page was frozen at the same instant as the pattern: its count of completed
    passes must be the lower pass of the cut (or, with no boundary, that pass or the one
    before: the count is written just after a pass's last page)."""
    if not rep.ok or not st.running:
        if not st.running:
            rep.add(f"status page magic {st.magic:#x}: not the writer's")
        return
    hi, lo = rep.passes
    expected = {lo} if rep.boundary is not None else {hi - 1, hi}
    if st.passes not in expected:
        rep.add(f"status page says {st.passes} passes completed; the pages say "
                f"{sorted(expected)}: not the same instant")


def save_artifact(data: dict, name: str) -> Path | None:
    """Write *data* as JSON where `uffdwp run` collects artifacts (UFFDWP_ARTIFACTS), if set."""
    directory = os.environ.get("UFFDWP_ARTIFACTS")
    if not directory:
        return None
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path
