# SPDX-License-Identifier: GPL-2.0-only
"""The snapshot engine and the native layer on the paths a real caller walks: concurrent
snapshots, overlapping regions, memory discarded or unmapped mid-snapshot, shared memory
written by a child, interrupts, stuck readers, bounded waits, and every misuse of a native
handle. Each case runs in a child process on the real kernel, so a crash is a failure."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from suites.uffdtest import missing_reason
from uffdwp import memory
from uffdwp.kernel_facts import Feature, RegisterMode
from uffdwp.snapshot import load, verify
from uffdwp.uffd import supported_features

from .childproc import ROOT, assert_ok, describe, run_python

try:
    OFFERED = supported_features()
except OSError as _exc:  # no userfaultfd here: every case says why
    OFFERED = Feature(0)
    NO_UFFD = f"no userfaultfd here: {_exc}"
else:
    NO_UFFD = ""

pytestmark = [
    pytest.mark.skipif(bool(NO_UFFD), reason=NO_UFFD),
    pytest.mark.skipif(not OFFERED & Feature.PAGEFAULT_FLAG_WP,
                       reason="feature PAGEFAULT_FLAG_WP (mainline 5.7) absent on this kernel"),
]
needs_shmem_wp = pytest.mark.skipif(
    not OFFERED & Feature.WP_HUGETLBFS_SHMEM,
    reason="feature WP_HUGETLBFS_SHMEM (mainline 5.19) absent on this kernel")

# Shared by the children: a region with a known pattern, and how to count protected pages.
PRELUDE = """
import errno, os, signal, sys, threading, time
from uffdwp import memory, native, pagemap
from uffdwp.snapshot import Snapshot, SnapshotError, load, take, verify
from uffdwp.snapshot.check import fill_initial
from uffdwp.snapshot.image import RegionInfo
MIB = 1 << 20

def patterned(memtype, size):
    r = memory.allocate(memtype, size)
    return r, bytes(fill_initial(RegionInfo(r.address, r.length, r.page_size, memtype)))

def protected(r):
    return sum(pagemap.uffd_wp(r.address, r.length))

def unmap(address, length):
    from uffdwp._ffi import ffi, lib
    assert lib.munmap(ffi.cast("void *", address), length) == 0

# The engine has saved what fits in its ring (32 MiB) and waits: the rest is unsaved.
def slow(path, delay=1.0):
    return f"exec:sleep {delay}; cat > {path}"
"""


def child(code: str, timeout: float = 90, args: tuple[str, ...] = ()) -> str:
    return assert_ok(run_python(PRELUDE + code, timeout=timeout, args=args))


# --- 1. two snapshots to one file ----------------------------------------------------------
TAKE_AT = """
byte, start_at, path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
r = memory.allocate("anon", 32 * MIB)
r.fill(byte)
while time.time() < start_at:
    time.sleep(0.0005)
result = take([r], f"file:{path}", timeout=60)
print("committed", result.image_bytes)
"""


def test_two_snapshots_to_one_file_leave_one_whole_image(tmp_path):
    path = tmp_path / "snap.img"
    for attempt in range(3):
        start_at = time.time() + 1.0
        procs = [subprocess.Popen([sys.executable, "-c", PRELUDE + TAKE_AT, str(b),
                                   str(start_at), str(path)], cwd=ROOT, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=dict(os.environ, PYTHONPATH=str(ROOT)))
                 for b in (0x11, 0x22)]
        for p in procs:
            out, err = p.communicate(timeout=90)
            # both commit a whole image of their own; the last rename wins
            assert p.returncode == 0 and "committed" in out, (attempt, p.returncode, err)
        verify(path)
        content = load(path).contents[0]
        assert content in (bytes([0x11]) * len(content), bytes([0x22]) * len(content))
        assert sorted(os.listdir(tmp_path)) == ["snap.img"], "a partial file was left behind"


# --- 2. overlapping or repeated regions ------------------------------------------------------
@pytest.mark.parametrize("layout", ["overlap", "twice", "inside"])
def test_overlapping_regions_are_refused_before_anything_is_protected(layout):
    out = child(f"""
r, _ = patterned("anon", 32 * MIB)
a, half = r.address, 16 * MIB
regions = {{"overlap": [(a, half, 4096), (a + 8 * MIB, half, 4096)],
           "twice": [(a, half, 4096), (a, half, 4096)],
           "inside": [(a, 32 * MIB, 4096), (a + MIB, MIB, 4096)]}}["{layout}"]
try:
    take(regions, "file:/dev/null")
    print("accepted")
except ValueError as exc:
    print("refused:", exc)
print("protected", protected(r))
""")
    assert "refused:" in out and ("overlaps" in out or "given twice" in out), out
    assert "protected 0" in out


# --- 2b. a range registered without UFFDIO_WRITEPROTECT ------------------------------------
def test_a_range_registered_without_writeprotect_is_refused_before_protecting():
    """As QEMU checks: UFFDIO_REGISTER lists the ioctls the range supports; one registered for
    WP without WRITEPROTECT cannot be frozen. (A kernel answering so is shown by stripping the
    bit from the real answer.)"""
    out = child("""
from uffdwp import Ioctl
from uffdwp.uffd import Userfaultfd
real = Userfaultfd.register
Userfaultfd.register = lambda self, *a: real(self, *a) & ~Ioctl.WRITEPROTECT
r, _ = patterned("anon", 4 * MIB)
try:
    take([r], "file:/dev/null")
    print("accepted")
except SnapshotError as exc:
    print("refused:", exc)
print("protected", protected(r))
r.view()[0] = 1
print("written")
""")
    assert "refused:" in out and "without UFFDIO_WRITEPROTECT" in out, out
    assert "protected 0" in out and "written" in out, out


# --- 3. discarded memory ---------------------------------------------------------------------
@pytest.mark.parametrize("memtype", ["anon", "shmem-private"])
def test_discard_of_unsaved_pages_waits_until_they_are_saved(memtype, tmp_path):
    if not OFFERED & Feature.EVENT_REMOVE:
        pytest.skip("feature EVENT_REMOVE (mainline 4.11) absent: a discard goes unnoticed")
    reason = missing_reason(memory.MemType.of(memtype).needs(RegisterMode.WP), OFFERED)
    if reason:
        pytest.skip(reason)
    img = tmp_path / "snap.img"
    out = child(f"""
r, frozen = patterned("{memtype}", 96 * MIB)
snap = Snapshot([r], slow("{img}")).start()
time.sleep(0.3)
t0 = time.monotonic()
r.madvise(memory.MADV_DONTNEED, 32 * MIB, 64 * MIB)   # 24,576 pages the engine has not saved
held = time.monotonic() - t0
result = snap.wait(60)
assert r.read(40 * MIB, 4096) == bytes(4096), "the discard did not happen"
image = load("{img}").contents[0]
bad = sum(image[p:p + 4096] != frozen[p:p + 4096] for p in range(0, len(frozen), 4096))
print("pages differing", bad, "drains", result.stats.drains, "held %.2f" % held)
""")
    assert "pages differing 0 " in out, out
    assert "drains 0" not in out, out


@pytest.mark.timeout(300)
def test_discard_during_the_freeze_comes_before_the_cut(tmp_path):
    if not OFFERED & Feature.EVENT_REMOVE:
        pytest.skip("feature EVENT_REMOVE (mainline 4.11) absent: a discard goes unnoticed")
    img = tmp_path / "snap.img"
    out = child(f"""
from uffdwp.snapshot.check import fill_initial
r, frozen = patterned("anon", 256 * MIB)
outcomes = set()
for _ in range(3):
    snap = Snapshot([r], "file:{img}").start()
    r.madvise(memory.MADV_DONTNEED, 128 * MIB, 64 * MIB)  # while the regions are protected
    snap.wait(120)
    part = load("{img}").contents[0][128 * MIB:192 * MIB]
    outcomes.add("before" if part == bytes(len(part)) else
                 "after" if part == frozen[128 * MIB:192 * MIB] else "torn")
    fill_initial(RegionInfo(r.address, r.length, r.page_size, "anon"))
print("outcomes", sorted(outcomes))
""", timeout=280)
    assert "torn" not in out and "outcomes" in out, out


# --- 4. shared memory and other writers ------------------------------------------------------
@needs_shmem_wp
def test_shared_memory_mapped_by_a_child_is_refused():
    out = child("""
r, _ = patterned("shmem", 16 * MIB)
pid = os.fork()
if pid == 0:  # a child that keeps writing through its own mapping
    while True:
        native.store_u64(r.address + 4096 * (int(time.monotonic() * 1e6) % 4096), 7)
try:
    try:
        take([r], "file:/dev/null")
        print("accepted")
    except SnapshotError as exc:
        print("refused:", exc)
    result = take([r], "file:/dev/null", allow_shared_writers=True)
    print("opted in:", result.notes)
finally:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
""")
    assert "refused:" in out and "pid" in out and "allow_shared_writers" in out, out
    assert "opted in:" in out and "not in the image" in out, out


@needs_shmem_wp
def test_fork_during_a_shared_memory_snapshot_fails_it(tmp_path):
    if not OFFERED & Feature.EVENT_FORK:
        pytest.skip("feature EVENT_FORK (mainline 4.11) absent on this kernel")
    out = child(f"""
r, _ = patterned("shmem", 64 * MIB)
snap = Snapshot([r], slow("{tmp_path / 'snap.img'}")).start()
time.sleep(0.2)
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
try:
    snap.wait(60)
    print("completed")
except SnapshotError as exc:
    print("failed:", exc.phase, exc)
print("protected", protected(r))
""")
    assert "failed: fork" in out and "protected 0" in out, out


# --- 5. unmapped memory ----------------------------------------------------------------------
# A reader that takes the header and the first 20 MiB, then nothing until a flag file appears:
# the engine has written those 20 MiB from memory and waits with the rest unsaved.
PAUSING_READER = """
import os, sys, time
image, flag = sys.argv[1], sys.argv[2]
with open(image, "wb") as out:
    out.write(sys.stdin.buffer.read(20 << 20))
    out.flush()
    while not os.path.exists(flag):
        time.sleep(0.01)
    while chunk := sys.stdin.buffer.read(1 << 20):
        out.write(chunk)
"""


def while_paused(tmp_path, action: str) -> str:
    """In a child: a 64 MiB anon snapshot (`r`, `frozen`, `snap`) to the pausing reader, which has
    taken about 20 MiB; the engine has queued what fits in its ring and left the rest unsaved.
    Run *action* then, let the reader go, and print how the snapshot ended."""
    img, flag, reader = tmp_path / "snap.img", tmp_path / "go", tmp_path / "reader.py"
    reader.write_text(PAUSING_READER)
    return child(f"""
r, frozen = patterned("anon", 64 * MIB)
snap = Snapshot([r], "exec:{sys.executable} {reader} {img} {flag}").start()
deadline = time.monotonic() + 30
while snap.stats.bytes_written < 19 * MIB and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.3)
{action}
open("{flag}", "w").close()
try:
    snap.wait(60)
    print("completed", load("{img}").contents[0] == frozen)
except SnapshotError as exc:
    print("failed:", exc.phase, exc)
""")


@pytest.mark.parametrize("part", ["all", "unsaved half", "written half"])
def test_munmap_during_a_snapshot(part, tmp_path):
    start, length = {"all": (0, 64), "unsaved half": (32, 32), "written half": (0, 16)}[part]
    out = while_paused(tmp_path, f"unmap(r.address + {start} * MIB, {length} * MIB)")
    if part == "written half":  # written before it went: the image still holds it
        assert "completed True" in out, out
    else:
        assert "failed: read memory" in out and "unmapped" in out, out


def test_a_queued_page_that_loses_protection_fails_the_snapshot(tmp_path):
    """A page of the linear pass is written from memory after its CRC: that is right only while
    it stays protected. Unprotected behind the engine's back (as a kernel that drops the WP bit
    would) and rewritten, it must fail the snapshot, not give an image of post-freeze data."""
    out = while_paused(tmp_path, """
passed = snap.stats.linear_pages * r.page_size  # queued up to here, written only to ~20 MiB
assert passed >= 22 * MIB, passed
start = r.address + passed - MIB
snap.uffd.unprotect(start, MIB)
r.view()[start - r.address:start - r.address + MIB] = bytes([0xEE]) * MIB
""")
    assert "failed: protection" in out, out


# --- 6. writers whose memory goes away ------------------------------------------------------
def test_writer_stops_when_its_memory_is_unmapped():
    out = child("""
r = memory.allocate("anon", 4 * MIB)
ws = [native.Writer(r.address, r.length, offset_in_page=8 * i) for i in range(4)]
time.sleep(0.05)
unmap(r.address, r.length)
print("stopped", all(w.wait(5) for w in ws), [w.stats.error for w in ws])
""")
    assert f"stopped True {[14] * 4}" in out, out  # EFAULT


def test_demo_with_too_many_writers_is_refused_before_any_starts():
    out = child("""
from uffdwp.snapshot.demo import run_demo
try:
    run_demo(4 * MIB, "file:/dev/null", writers=513, rate=1000)
except ValueError as exc:
    print("refused:", exc)
print("threads", threading.active_count())
""")
    assert "refused: 513 writers" in out and "threads 1" in out, out


# --- 7. restore into memory that is not there -----------------------------------------------
def test_restore_needs_mapped_writable_memory_of_the_whole_length(tmp_path):
    img = tmp_path / "snap.img"
    out = child(f"""
from uffdwp.snapshot import restore
r, _ = patterned("anon", 4 * MIB)
take([r], "file:{img}")
small = memory.allocate("anon", 2 * MIB)
r.close()
for name, where in (("unmapped", None), ("smaller", [small.address])):
    try:
        restore("{img}", where)
        print(name, "accepted")
    except ValueError as exc:
        print(name, "refused:", exc)
""")
    assert "unmapped refused:" in out and "smaller refused:" in out, out
    assert "not mapped writable" in out


# --- 8. native handles after a failed constructor -------------------------------------------
def test_failed_constructors_leave_safe_objects():
    out = child("""
import gc
from uffdwp.native import FaultHandler, Writer
for make in (lambda: FaultHandler(-1, []), lambda: Writer(0, 4096, offset_in_page=4096),
             lambda: Writer(0, 4096, rate=-1), lambda: Snapshot([(0, 0, 4096)], "x"),
             lambda: Snapshot([], "x"), lambda: Snapshot([(4096, 4096, 4096)], "ftp:x")):
    try:
        make()
        print("constructed?")
    except Exception as exc:
        print(type(exc).__name__, exc)
gc.collect()
print("alive")
""")
    assert "constructed?" not in out and out.rstrip().endswith("alive"), out
    assert "EBADF" in out


# --- 9. interrupts -------------------------------------------------------------------------
def test_keyboard_interrupt_in_take_aborts_and_unprotects():
    out = child("""
r, _ = patterned("anon", 64 * MIB)
def interrupt(signum, frame):
    raise KeyboardInterrupt
signal.signal(signal.SIGALRM, interrupt)
signal.setitimer(signal.ITIMER_REAL, 0.3)
t0 = time.monotonic()
try:
    take([r], "exec:sleep 30")
except KeyboardInterrupt:
    # while the exception (and its traceback, and every frame in it) still lives
    print("interrupted after %.1f s" % (time.monotonic() - t0))
    print("protected", protected(r))
    w = native.Writer(r.address, r.length, max_writes=10000)
    print("writer done", w.wait(5))
    w.request_stop()
    w.wait(5)
    print("again", take([r], "file:/dev/null").stats.pages_saved)
""")
    assert "interrupted after 0." in out or "interrupted after 1." in out, out
    assert "protected 0" in out and "writer done True" in out and "again 16384" in out, out


# --- 10. a reader that stops ----------------------------------------------------------------
def test_stall_timeout_ends_a_snapshot_whose_reader_takes_nothing():
    out = child("""
r, _ = patterned("anon", 64 * MIB)
t0 = time.monotonic()
try:
    take([r], "exec:sleep 30", stall_timeout=1.0)
except SnapshotError as exc:
    print("failed after %.1f s:" % (time.monotonic() - t0), errno.errorcode[exc.errno], exc)
print("protected", protected(r))
""")
    assert "ETIMEDOUT" in out and "stopped or stuck" in out and "protected 0" in out, out
    elapsed = float(out.split("failed after ")[1].split()[0])
    assert elapsed < 5, out


def test_cli_offers_the_stall_timeout_and_a_timeout():
    from .childproc import run_cli

    proc = run_cli("snapshot", "demo", "--size", "16M", "--writers", "0", "--no-progress",
                   "--stall-timeout", "1", "--timeout", "20", "--to", "exec:sleep 30")
    assert proc.returncode == 1 and "ETIMEDOUT" in proc.stderr, describe(proc)
    assert "Traceback" not in proc.stderr


# --- 11. a timeout bounds the whole call ----------------------------------------------------
def test_timeout_bounds_the_exec_commit():
    out = child("""
r, _ = patterned("anon", 8 * MIB)
t0 = time.monotonic()
try:
    take([r], "exec:cat > /dev/null; sleep 60", timeout=3)
    print("completed")
except SnapshotError as exc:
    print("failed after %.1f s:" % (time.monotonic() - t0), exc)
""", timeout=40)
    assert "failed after" in out and "did not exit" in out, out
    assert float(out.split("failed after ")[1].split()[0]) < 5, out


# --- 12. records are whole when they are counted --------------------------------------------
# A reader copies every record counted at that instant (the C call the Python API makes); the
# last one must be filled in, however fast the thread that writes them runs.
def test_writer_records_are_whole_when_counted():
    out = child("""
from uffdwp._ffi import ffi, lib
r = memory.allocate("anon", 4 * MIB)
cap, base, torn, copies = 1 << 16, 7 << 48, 0, 0
buf = ffi.new("struct uffdwp_write_record[]", cap)
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    w = native.Writer(r.address, r.length, value_base=base, record_capacity=cap,
                      max_writes=cap)
    while w.stats.running:
        n = lib.uffdwp_writer_records(w._w, buf, cap)
        copies += 1
        torn += n > 0 and (buf[n - 1].value != base + n - 1 or buf[n - 1].t_start_ns == 0)
    w.close()
print("torn", torn, "of", copies)
""")
    assert "torn 0 " in out, out


def test_handler_records_are_whole_when_counted():
    out = child("""
from uffdwp._ffi import ffi, lib
from uffdwp.kernel_facts import Feature, RegisterMode
from uffdwp.uffd import Userfaultfd
r = memory.allocate("anon", 64 * MIB)
r.fill(1)
uffd = Userfaultfd.create(Feature.PAGEFAULT_FLAG_WP)
uffd.register(r.address, r.length, RegisterMode.WP)
uffd.writeprotect(r.address, r.length)
h = native.FaultHandler(uffd, [(r.address, r.length)])
w = native.Writer(r.address, r.length, max_writes=r.pages)
buf = ffi.new("struct uffdwp_record[]", r.pages)
torn = copies = 0
while w.stats.running:
    counted = h.stats.messages  # what wait_for() waits on
    n = lib.uffdwp_handler_records(h._h, buf, counted)
    copies += 1
    torn += n < counted or (n > 0 and (buf[n - 1].address == 0 or buf[n - 1].t_read_ns == 0))
w.close()
h.stop()
print("torn", torn, "of", copies)
""")
    assert "torn 0 " in out, out


# --- 13. the caller's descriptor keeps its flags --------------------------------------------
def test_handler_and_engine_give_the_fd_its_flags_back():
    out = child("""
import fcntl
from uffdwp._ffi import ffi, lib
from uffdwp.kernel_facts import Feature, RegisterMode
from uffdwp.uffd import Userfaultfd
r = memory.allocate("anon", 1 * MIB)
uffd = Userfaultfd.create(Feature.PAGEFAULT_FLAG_WP, nonblock=False)
uffd.register(r.address, r.length, RegisterMode.WP)
native.FaultHandler(uffd, [(r.address, r.length)]).stop()
print("handler", fcntl.fcntl(uffd.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)
regions = ffi.new("struct uffdsnap_region[]", [(r.address, r.length, 4096)])
cfg = ffi.new("struct uffdsnap_config *", {"uffd": uffd.fileno(), "out_fd": os.open(
    "/dev/null", os.O_WRONLY), "protect": 1, "n_regions": 1, "regions": regions})
err = ffi.new("int *")
h = lib.uffdsnap_start(cfg, err)
assert h != ffi.NULL, err[0]
lib.uffdsnap_wait(h, 10000)
lib.uffdsnap_free(h)
print("engine", fcntl.fcntl(uffd.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)
""")
    assert "handler 0" in out and "engine 0" in out, out


# --- 17. misaligned ranges say so ------------------------------------------------------------
def test_unaligned_ranges_are_called_unaligned():
    out = child("""
from uffdwp.kernel_facts import Feature, RegisterMode
from uffdwp.uffd import Userfaultfd
r = memory.allocate("anon", 1 * MIB)
with Userfaultfd.create(Feature.PAGEFAULT_FLAG_WP) as uffd:
    try:
        uffd.register(r.address + 100, 4096, RegisterMode.WP)
    except OSError as exc:
        print("register:", exc)
try:
    take([(r.address + 100, 4096, 4096)], "file:/dev/null")
except ValueError as exc:
    print("snapshot:", exc)
""")
    assert out.count("not page aligned") == 2, out
