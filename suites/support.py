# SPDX-License-Identifier: GPL-2.0-only
"""Helpers the suites share: patterns and loads, blocking and free writes, forked children,
threads, swap-out and THP set-up. Test modules import these, never each other."""

from __future__ import annotations

import contextlib
import errno
import faulthandler
import json
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from uffdwp import native
from uffdwp.errors import MemoryUnavailableError, UffdError
from uffdwp.memory import MADV_HUGEPAGE, MADV_PAGEOUT, PAGE_SIZE, THP_SIZE, Region, allocate
from uffdwp.messages import EVENT_FORK, PageFault
from uffdwp.runner.precondition import require
from uffdwp.uffd import Userfaultfd

from .observe import page_wp

SAMPLE = (0, 1, 255, 256, 511)  # subpages to write: the edges and the middle of the THP
BLOCKED = 0.2  # how long a writer must stay blocked to count as "not woken"
RESUME = 5.0  # generous wait for a writer that must resume (loaded 2-core machine)


def allocate_or_skip(memtype: str, length: int | None = None, **kw: Any) -> Region:
    """memory.allocate, or skip where this host cannot give the type (no free huge pages).
    Not a declaration: how many huge pages a test maps is known only when it maps them, and
    concurrent runs share the pool."""
    try:
        return allocate(memtype, length, **kw)
    except MemoryUnavailableError as exc:
        pytest.skip(f"{memtype} unavailable: {exc}")  # not a declaration: see above


def pattern(index: int) -> int:
    """The 64-bit value page *index* holds in these tests (never zero, distinct per page)."""
    return 0xA5A5_0000_0000_0000 | (index + 1)


def fill_pattern(region: Region) -> None:
    for i in range(region.pages):
        native.store_u64(region.page(i), pattern(i))


def load(address: int) -> int:
    return native.load_u64(address)


def vma_field(address: int, name: str, pid: int | str = "self") -> int:
    """A kB field (Swap, AnonHugePages, Rss…) of the smaps entry of the VMA holding *address*."""
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and head == f"{name}:":
                return int(line.split()[1])
    raise LookupError(f"no VMA with {name} at {address:#x}")


def page_out(region: Region, offset: int = 0, length: int | None = None, tries: int = 5) -> bool:
    """MADV_PAGEOUT until smaps reports the whole range as swap; False if it never did.

    Swap is counted from smaps because pagemap shows pte markers (shmem) as swap entries too."""
    length = region.length - offset if length is None else length
    for _ in range(tries):
        region.madvise(MADV_PAGEOUT, offset, length)
        if vma_field(region.address + offset, "Swap") * 1024 >= length:
            return True
        time.sleep(0.05)
    return False


def require_pageout(region: Region, offset: int = 0, length: int | None = None) -> None:
    require(page_out(region, offset, length), "pages not swapped out",
            "MADV_PAGEOUT: reclaim declined them 5 times")


def _fault_of(uffd: Userfaultfd, st, address: int) -> PageFault:
    """The WP fault the store *st* must raise (it never arrives if the write went through)."""
    msgs = uffd.read(1, 0.5 if st.finished(0.02) else 5)
    assert msgs, (f"write to {address:#x} did not fault" if st.finished()
                  else f"write to {address:#x} stalled but no message came")
    msg = msgs[0]
    assert isinstance(msg, PageFault) and msg.is_wp and msg.is_write, msg
    return msg


def assert_blocks(ctx, uffd: Userfaultfd, address: int, value: int) -> None:
    """A store to *address* must stop in a WP fault at that page; resolve it and check it lands."""
    st = ctx.store(address, value)
    msg = _fault_of(uffd, st, address)
    page = address & ~(PAGE_SIZE - 1)
    assert msg.address & ~(PAGE_SIZE - 1) == page
    assert not st.finished(0.02), "writer resumed before the fault was resolved"
    uffd.unprotect(page, PAGE_SIZE)
    assert st.finished(5), "writer not woken by unprotect"
    assert load(address) == value


def assert_blocks_hp(ctx, uffd: Userfaultfd, region: Region, index: int, value: int) -> None:
    """As assert_blocks for page *index* of *region*, resolving the whole (huge) page."""
    address = region.page(index)
    st = ctx.store(address + 8, value)
    msg = _fault_of(uffd, st, address)
    assert not st.finished(0.02), "writer resumed before the fault was resolved"
    assert region.page(index) <= msg.address < region.page(index) + region.page_size
    uffd.unprotect(address, region.page_size)
    assert st.finished(5), "writer not woken by unprotect"
    assert load(address + 8) == value


def assert_writes_freely(ctx, address: int, value: int) -> None:
    st = ctx.store(address, value)
    assert st.finished(5), f"write to {address:#x} stalled: an unexpected fault"
    assert load(address) == value


class Child:
    """A forked child running *fn* (simple, native work only). Its exit code is fn's result (0
    for None, 3 if it raised); killed by a signal, -signal."""

    def __init__(self, fn: Callable[[], int | None]) -> None:
        self.pid = os.fork()
        if self.pid == 0:  # the child: no Python threads exist here, only this one
            code = 3
            try:
                faulthandler.disable()  # let a SIGBUS/SIGSEGV kill the child silently
                code = int(fn() or 0)
            finally:
                os._exit(code)  # never return into pytest
        self.status: int | None = None

    def poll(self) -> int | None:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def wait(self, timeout: float = 5.0) -> int | None:
        """Exit code, or None (after killing it) if it did not finish within *timeout*."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                return None
            time.sleep(0.005)
        return self.status

    def kill(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            _, status = os.waitpid(self.pid, 0)
            self.status = os.waitstatus_to_exitcode(status)


@contextlib.contextmanager
def child(fn):
    c = Child(fn)
    try:
        yield c
    finally:
        c.kill()


def child_write(address: int, value: int, expect_wp: bool | None = None):
    """The child's job: check its own protection of *address* (exit 10 if not as expected), then
    store."""

    def run() -> int:
        if expect_wp is not None and page_wp(address, in_child=True) != expect_wp:
            return 10
        native.store_u64(address, value)
        return 0 if native.load_u64(address) == value else 11

    return run


def run_forked(ctx, uffd: Userfaultfd, region: Region, run, with_event: bool,
               faults: tuple[int, ...] = (0,), exact: bool = False, timeout: float = 5) -> None:
    """fork() a child doing *run*; it must exit 0. With EVENT_FORK each page index in *faults*
    must fault WP on the child's new userfaultfd (at that page if *exact*) and is unprotected
    through it; without, the child runs alone."""
    if not with_event:
        with child(run) as c:
            assert c.wait(timeout) == 0, \
                f"child exit {c.status} (10: wrong bit 57 in the child; None: stuck)"
        return
    c, cuffd = fork_with_event(ctx, uffd, region, run)
    try:
        for i in faults:
            msg = ctx.fault(cuffd)
            assert msg.is_wp and (not exact or msg.address == region.page(i)), msg
            cuffd.unprotect(region.page(i), region.page_size)
        assert c.wait(timeout) == 0, f"child exit {c.status}"
    finally:
        c.kill()


def fork_with_event(ctx, uffd: Userfaultfd, region: Region, fn) -> tuple[Child, Userfaultfd]:
    """fork() while a native thread reads *uffd* (the forking thread waits for the FORK event to
    be read, and os.fork holds the GIL); returns the child and the child's new userfaultfd."""
    # No ranges: stopping it must not unprotect the parent's memory.
    h = native.FaultHandler(uffd, [], native.Policy.RECORD)
    c = Child(fn)
    try:
        h.wait_for(1, 5)
        forks = [r for r in h.records() if r.event == EVENT_FORK]
        assert len(forks) == 1, f"expected one FORK event, got {h.records()}"
    except BaseException:
        c.kill()
        raise
    finally:
        h.stop()
    child_uffd = Userfaultfd(forks[0].address)
    ctx.own(child_uffd)  # closed by the context's cleanup
    return c, child_uffd


def thp_region(ctx, fill: bool = True) -> Region:
    """A 2 MiB-aligned anonymous region backed by one PMD-mapped THP (tests using it declare
    needs=THP); a precondition skip where the kernel did not back it with one."""
    region = ctx.region(THP_SIZE // PAGE_SIZE, align=THP_SIZE)
    region.madvise(MADV_HUGEPAGE)
    if fill:
        fill_pattern(region)
    else:
        native.store_u64(region.address, 1)  # fault the huge page in
    require(vma_field(region.address, "AnonHugePages") * 1024 >= THP_SIZE,
            "no THP backing obtained", "the kernel did not back the 2 MiB range with a THP "
            "(fragmented memory?)")
    return region


def expect_errno(err: int, fn, *args, **kw) -> UffdError:
    """Call *fn* and assert it fails with *err*."""
    with pytest.raises(UffdError) as info:
        fn(*args, **kw)
    assert info.value.errno == err, f"expected {errno.errorcode[err]}, got {info.value}"
    return info.value


def fault_addresses(addr: int, region) -> set[int]:
    """Addresses a fault message may carry for a store at *addr* without EXACT_ADDRESS: the
    base page (userfault_msg masks with PAGE_MASK); hugetlb kernels before the real_address
    rework (5.18) reported the huge page start instead."""
    return {addr & ~(PAGE_SIZE - 1), addr & ~(region.page_size - 1)}


def no_message(ctx, uffd, timeout: float = 0.1) -> None:
    msgs = list(ctx.messages(uffd, timeout))
    assert msgs == [], f"unexpected userfaultfd messages: {msgs}"


class OnThread:
    """*fn(*args)* on a Python thread: a native call (a store, a load, munmap) that blocks in a
    fault or an event does so without the GIL. Its tid, when it ended, its result or error."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.tid = 0
        self.t_done = 0  # time.monotonic_ns() when fn returned
        self.done = threading.Event()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fn, args, ready), daemon=True)
        self._thread.start()
        ready.wait(2)

    def _run(self, fn: Callable[..., Any], args: tuple, ready: threading.Event) -> None:
        self.tid = threading.get_native_id()
        ready.set()
        try:
            self.result = fn(*args)
        except BaseException as exc:  # reported by the test, through .error
            self.error = exc
        self.t_done = time.monotonic_ns()
        self.done.set()

    def finished(self, timeout: float = 0.0) -> bool:
        return self.done.wait(timeout)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def value(self) -> Any:
        """fn's result (its exception raised here)."""
        if self.error is not None:
            raise self.error
        return self.result


def store(address: int, value: int) -> OnThread:
    """A store from C on its own thread."""
    return OnThread(native.store_u64, address, value)


def load_on_thread(address: int) -> OnThread:
    """A load from C on its own thread (it blocks in a read fault)."""
    return OnThread(native.load_u64, address)


def run_in_child(fn: Callable[[], int | None], timeout: float = 5.0) -> int:
    """Run *fn* in a forked Child and return its exit code (-signal if a signal killed it);
    fail the test if it has not ended within *timeout* seconds (it is killed)."""
    code = Child(fn).wait(timeout)
    if code is None:
        pytest.fail(f"child did not finish within {timeout}s")
    return code


def assert_killed_by(code: int, sig: int) -> None:
    """*code* (run_in_child's) says the child died of signal *sig*."""
    if code < 0:
        assert -code == sig, f"child killed by signal {-code}"
    else:
        pytest.fail(f"child exited with {code} instead of dying by {signal.Signals(sig).name}")


class ChildProgress:
    """What a forked child (in_child) tells its parent as it goes: the last step it reached is
    what a deadline reports when the child hangs."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def step(self, text: str) -> None:
        os.write(self._fd, (json.dumps({"step": text}) + "\n").encode())


def in_child(fn: Callable[[ChildProgress], object], timeout: float) -> object:
    """Run *fn* in a forked child with a deadline, for work that a misbehaving kernel can block
    where no signal gets through (a Python-level store into a protected page holds the GIL
    while it faults). Returns fn's (JSON-able) result; a skip or a failure in the child is the
    test's; a child still running after *timeout* is killed and the test fails, naming the last
    step it reached. (Only the forking thread exists in the child: native threads it starts
    itself are fine.)"""
    rfd, wfd = os.pipe()

    def run() -> int:  # in the child
        os.close(rfd)
        out: dict[str, object]
        try:
            out = {"result": fn(ChildProgress(wfd))}
        except pytest.skip.Exception as exc:
            out = {"skip": str(exc.msg)}
        except AssertionError as exc:
            out = {"fail": str(exc) or "assertion failed"}
        except BaseException as exc:  # all of it goes to the parent
            out = {"error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(Exception):
            os.write(wfd, (json.dumps(out, default=repr) + "\n").encode())
        return 0

    child_ = Child(run)
    os.close(wfd)
    buf, last, deadline = b"", {}, time.monotonic() + timeout
    try:
        with os.fdopen(rfd, "rb", buffering=0) as pipe:
            while "step" in last or not last:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([pipe], [], [], left)[0]:
                    raise AssertionError(
                        f"the child did not finish within {timeout:g} s (killed); last step: "
                        f"{last.get('step', 'none')}")
                chunk = pipe.read(65536)
                if not chunk:
                    raise AssertionError(f"the child died; last step: {last.get('step')}")
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    last = json.loads(line)
    finally:
        child_.kill()
    if "skip" in last:
        # Not a declaration: the child's own skip (a declaration's or a precondition's),
        # re-raised in the test that ran it
        pytest.skip(last["skip"])
    if "fail" in last:
        raise AssertionError(last["fail"])
    if "error" in last:
        raise RuntimeError(f"in the child: {last['error']}")
    return last["result"]
