# SPDX-License-Identifier: GPL-2.0-only
"""How a conformance test is declared, and the one place that decides whether it can run.

Like the kernel's uffd-unit-tests.c, each test states the memory types it applies to, the
register modes it uses and the features it needs:

    @uffd_test(mem=MEM_ALL, modes=RegisterMode.WP, features=Feature.WP_UNPOPULATED)
    def test_wp_unpopulated(ctx): ...

The runner (suites/conftest.py) parametrizes the test over the memory types and skips a case
whose required features the running kernel does not negotiate, naming the feature and the
mainline release that brought it. Nothing is gated on version strings.

A test that reproduces a known bug declares it (``bug=`` a key of known_bugs.KNOWN_BUGS) and
the one check that shows it:

    @uffd_test(mem=("hugetlb-private",), bug="hugetlb-unshare")
    def test_hugetlb_unshare_keeps_wp(ctx, memtype):
        ...                                  # preconditions: an error or a skip, never the bug
        with ctx.bug_check():
            assert region_wp(region) == [True], "uffd-wp bit lost when the page was unshared"

Only an assertion failing inside that block is reported as the bug (or as its regression on a
kernel that has the fix: runner/verdicts.py).
"""

from __future__ import annotations

import errno
import functools
import json
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from uffdwp import kernel_facts as kf
from uffdwp import native
from uffdwp._ffi import lib
from uffdwp.errors import MemoryUnavailableError, UffdError
from uffdwp.kernel_facts import Feature, RegisterMode
from uffdwp.known_bugs import KNOWN_BUGS
from uffdwp.memory import MEMORY_TYPES, Region, allocate
from uffdwp.messages import Message, PageFault
from uffdwp.runner import precondition
from uffdwp.runner.bugcheck import bug_check
from uffdwp.uffd import Userfaultfd

T = TypeVar("T")

MEM_ALL = MEMORY_TYPES
MEM_ANON = ("anon",)
MEM_SHMEM = ("shmem", "shmem-private")
MEM_HUGETLB = ("hugetlb", "hugetlb-private")
MEM_FILE = ("shmem", "shmem-private", "hugetlb")  # backed by a memfd (page cache)
MEM_SHARED = ("shmem", "hugetlb")
MEM_PRIVATE = ("anon", "shmem-private", "hugetlb-private")
MEM_NOT_HUGETLB = ("anon", "shmem", "shmem-private")

# Stress sizes shrink where the CPU is emulated (the matrix sets this in TCG guests): the
# checks stay the same, only the amount of work changes.
STRESS_SCALE = float(os.environ.get("UFFDWP_STRESS_SCALE", "1"))


def stress(count: int, minimum: int = 1) -> int:
    """A stress test's *count* (writes, cycles) scaled for this machine."""
    return max(minimum, int(count * STRESS_SCALE))


WP = RegisterMode.WP
MISSING = RegisterMode.MISSING
MINOR = RegisterMode.MINOR


def implied_features(memtype: str, modes: RegisterMode) -> Feature:
    """Features the kernel must offer before *modes* can be registered on *memtype*."""
    need = Feature(0)
    shmem, hugetlb = memtype.startswith("shmem"), memtype.startswith("hugetlb")
    if modes & WP:
        need |= Feature.PAGEFAULT_FLAG_WP
        if shmem or hugetlb:
            need |= Feature.WP_HUGETLBFS_SHMEM
    if modes & MINOR:
        need |= Feature.MINOR_SHMEM if shmem else Feature.MINOR_HUGETLBFS
    if modes & MISSING:
        need |= Feature.MISSING_SHMEM if shmem else Feature.MISSING_HUGETLBFS if hugetlb else 0
    return need


def missing_reason(required: Feature, supported: Feature) -> str | None:
    """The skip reason for the first feature this kernel lacks, or None if all are there."""
    absent = required & ~supported
    if not absent:
        return None
    names = []
    for fact in kf.FEATURE_FACTS:
        if absent & fact.value:
            names.append(f"{fact.name} (mainline {fact.since})")
    return "feature " + ", ".join(names) + " absent on this kernel"


@dataclass(frozen=True)
class UffdSpec:
    """What a test declares: the marker the runner reads."""

    features: Feature = Feature(0)
    modes: RegisterMode = WP
    # key of known_bugs.KNOWN_BUGS this test reproduces (a tuple where its checks show several
    # bugs, the first one named in reports while it passes), or memory type -> key where the bug
    # is specific to some types
    bug: str | tuple[str, ...] | Mapping[str, str] | None = None

    def bugs_for(self, memtype: str | None) -> tuple[str, ...]:
        bug = self.bug.get(memtype or "") if isinstance(self.bug, Mapping) else self.bug
        return (bug,) if isinstance(bug, str) else tuple(bug or ())

    def bug_for(self, memtype: str | None) -> str | None:
        bugs = self.bugs_for(memtype)
        return bugs[0] if bugs else None


def uffd_test(*, mem: tuple[str, ...] = MEM_ALL, modes: int = WP, features: int = 0,
              bug: str | tuple[str, ...] | Mapping[str, str] | None = None, timeout: float = 20):
    """Declare a conformance test: memory types × modes × required features (+ known bug)."""
    if modes & MINOR and "anon" in mem:
        raise ValueError("MINOR mode does not apply to anonymous memory")
    keys = (list(bug.values()) if isinstance(bug, Mapping) else [bug] if isinstance(bug, str)
            else list(bug or ()))
    unknown = [k for k in keys if k not in KNOWN_BUGS]
    if unknown:
        raise ValueError(f"unknown bug key(s) {unknown}")
    spec = UffdSpec(Feature(features), RegisterMode(modes), bug)

    def decorate(fn):
        fn = pytest.mark.parametrize("memtype", mem)(fn)
        fn = pytest.mark.uffd(spec)(fn)
        return pytest.mark.timeout(timeout)(fn)

    return decorate


def uffd_module(*, modes: int = WP, features: int = 0) -> pytest.MarkDecorator:
    """The declaration for a whole module (``pytestmark = uffd_module(...)``) whose tests use
    userfaultfd through a higher layer (the snapshot engine) rather than ``ctx``: a test
    without its own @uffd_test skips, naming the feature, where the kernel lacks it."""
    return pytest.mark.uffd(UffdSpec(Feature(features), RegisterMode(modes)))


@functools.lru_cache(maxsize=1)
def user_mode_only_accepted() -> bool:
    """UFFD_USER_MODE_ONLY has no feature bit: kernels before it reject the flag with EINVAL."""
    fd = lib.uffdwp_open_syscall(os.O_CLOEXEC | kf.UFFD_USER_MODE_ONLY)
    if fd >= 0:
        os.close(fd)
    return fd != -errno.EINVAL


def require_user_mode_only() -> None:
    if not user_mode_only_accepted():
        fact = next(f for f in kf.ACCESS_FACTS if f.name == "UFFD_USER_MODE_ONLY")
        pytest.skip(f"open flag UFFD_USER_MODE_ONLY (mainline {fact.since}) rejected with "
                    "EINVAL by this kernel")


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
    pid = os.fork()
    if pid == 0:  # the child
        os.close(rfd)
        try:
            out = {"result": fn(ChildProgress(wfd))}
        except pytest.skip.Exception as exc:
            out = {"skip": str(exc.msg)}
        except AssertionError as exc:
            out = {"fail": str(exc) or "assertion failed"}
        except BaseException as exc:  # all of it goes to the parent
            out = {"error": f"{type(exc).__name__}: {exc}"}
        with suppress(Exception):
            os.write(wfd, (json.dumps(out, default=repr) + "\n").encode())
        os._exit(0)
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
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if "skip" in last:
        pytest.skip(last["skip"])
    if "fail" in last:
        raise AssertionError(last["fail"])
    if "error" in last:
        raise RuntimeError(f"in the child: {last['error']}")
    return last["result"]


class StoreThread:
    """A store performed from C on a Python thread: it blocks in the fault without the GIL."""

    def __init__(self, address: int, value: int) -> None:
        self.address, self.value = address, value
        self.done = threading.Event()
        self._ready = threading.Event()
        self.tid = 0
        self.t_done = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(2)

    def _run(self) -> None:
        self.tid = threading.get_native_id()
        self._ready.set()
        native.store_u64(self.address, self.value)
        self.t_done = time.monotonic_ns()
        self.done.set()

    def finished(self, timeout: float = 0.0) -> bool:
        return self.done.wait(timeout)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


@dataclass
class Ctx:
    """Per-test helper: memory, userfaultfds and threads, all cleaned up afterwards so that
    nothing stays protected, blocked or mapped whatever the test did."""

    memtype: str
    supported: Feature
    spec: UffdSpec
    _regions: list[Region] = field(default_factory=list)
    _uffds: list[Userfaultfd] = field(default_factory=list)
    _handlers: list[native.FaultHandler] = field(default_factory=list)
    _stores: list[StoreThread] = field(default_factory=list)
    _writers: list[native.Writer] = field(default_factory=list)
    _registered: list[tuple[Userfaultfd, int, int]] = field(default_factory=list)

    # --- the known bug ---------------------------------------------------------------------------
    @property
    def bug(self) -> str | None:
        """The known bug this case reproduces (by memory type), or None."""
        return self.spec.bug_for(self.memtype)

    def bug_check(self, key: str | None = None) -> AbstractContextManager[None]:
        """The check that shows this case's known bug (*key*, where the test declares several):
        only an assertion failing inside it is reported as that bug (or as its regression);
        everything before it is a precondition."""
        bugs = self.spec.bugs_for(self.memtype)
        if key is None and len(bugs) > 1:
            raise ValueError(f"this test shows several bugs {bugs}: name the one this check shows")
        if key is not None and key not in bugs:
            raise ValueError(f"bug {key!r} is not declared by this test ({bugs})")
        return bug_check(key or self.bug)

    # --- preconditions (runner/precondition.py) ---------------------------------------------------
    def retry(self, attempt: Callable[[Ctx], T], *, tries: int = 3,
              budget_s: float | None = None) -> T:
        """attempt(ctx) on a fresh context each time (its memory, uffds and threads released
        before the next), again while its precondition is unmet; then a skip naming it."""
        def once() -> T:
            sub = Ctx(self.memtype, self.supported, self.spec)
            try:
                return attempt(sub)
            finally:
                sub.cleanup()
        return precondition.retry(once, tries=tries, budget_s=budget_s)

    # --- memory --------------------------------------------------------------------------------
    def region(self, pages: int = 4, memtype: str | None = None, **kw) -> Region:
        try:
            region = allocate(memtype or self.memtype, pages=pages, **kw)
        except MemoryUnavailableError as exc:
            pytest.skip(f"{memtype or self.memtype} unavailable: {exc}")
        self._regions.append(region)
        return region

    # --- userfaultfds --------------------------------------------------------------------------
    def features(self, extra: int = 0) -> Feature:
        """What a test's uffd asks for: its declared and implied features, THREAD_ID if there."""
        want = self.spec.features | implied_features(self.memtype, self.spec.modes) | extra
        return Feature(want | (self.supported & Feature.THREAD_ID))

    def uffd(self, extra: int = 0, features: int | None = None, **open_args) -> Userfaultfd:
        if open_args.get("user_mode_only"):
            require_user_mode_only()
        uffd = Userfaultfd.create(self.features(extra) if features is None else features,
                                  **open_args)
        self._uffds.append(uffd)
        return uffd

    def register(self, uffd: Userfaultfd, region: Region, modes: int | None = None,
                 start: int | None = None, length: int | None = None) -> kf.Ioctl:
        start = region.address if start is None else start
        length = region.length if length is None else length
        ioctls = uffd.register(start, length, self.spec.modes if modes is None else modes)
        self._registered.append((uffd, start, length))
        return ioctls

    def wp_region(self, pages: int = 4, *, populate: bool = True, protect: bool = True,
                  extra: int = 0, fill: int = 0x5A) -> tuple[Userfaultfd, Region]:
        """A populated region registered in WP mode and write-protected."""
        region = self.region(pages)
        if populate:
            region.fill(fill)
        uffd = self.uffd(extra)
        self.register(uffd, region, WP | (self.spec.modes & ~WP))
        if protect:
            uffd.writeprotect(region.address, region.length)
        return uffd, region

    # --- threads -------------------------------------------------------------------------------
    def store(self, address: int, value: int = 0xC0FFEE) -> StoreThread:
        thread = StoreThread(address, value)
        self._stores.append(thread)
        return thread

    def handler(self, uffd: Userfaultfd, region: Region,
                policy: native.Policy = native.Policy.UNPROTECT, **kw) -> native.FaultHandler:
        h = native.FaultHandler(uffd, [(region.address, region.length)], policy,
                                page_size=region.page_size, **kw)
        self._handlers.append(h)
        return h

    def writer(self, region: Region, **kw) -> native.Writer:
        w = native.Writer(region.address, region.length, page_size=region.page_size, **kw)
        self._writers.append(w)
        return w

    @staticmethod
    def fault(uffd: Userfaultfd, timeout: float = 5.0) -> PageFault:
        msg = uffd.read_one(timeout)
        assert isinstance(msg, PageFault), f"expected a page fault, got {msg}"
        return msg

    @staticmethod
    def messages(uffd: Userfaultfd, timeout: float = 0.2) -> Iterator[Message]:
        """Every message that arrives until none has come for *timeout* seconds."""
        while msgs := uffd.read(64, timeout):
            yield from msgs

    # --- teardown ------------------------------------------------------------------------------
    def cleanup(self) -> None:
        for h in self._handlers:
            h.stop()
        for uffd, start, length in self._registered:
            if not uffd.closed:
                with suppress(UffdError):
                    uffd.unprotect(start, length)
                with suppress(UffdError):
                    uffd.wake(start, length)
        for w in self._writers:
            with suppress(TimeoutError, RuntimeError):
                w.close(timeout=5)
        for uffd in self._uffds:
            uffd.close()  # closing wakes every thread still waiting on this fd
        for t in self._stores:
            t.join(5)
        for region in self._regions:
            region.close()
