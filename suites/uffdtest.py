# SPDX-License-Identifier: GPL-2.0-only
"""How a conformance test is declared, and the one place that decides whether it can run.

Like the kernel's uffd-unit-tests.c, each test states the memory types it applies to, the
register modes it uses and the features it needs:

    @uffd_test(mem=MEM_ALL, modes=RegisterMode.WP, features=Feature.WP_UNPOPULATED)
    def test_wp_unpopulated(ctx): ...

The runner (suites/conftest.py) parametrizes the test over the memory types and skips a case
whose required features the running kernel does not negotiate, naming the feature and the
mainline release that brought it. Nothing is gated on version strings. What has no feature bit
is a named capability, probed (capabilities.py), and a parameter can need more than its test:

    @pytest.mark.parametrize("state", ["present", pytest.param("marker", marks=requires(
        Feature.WP_UNPOPULATED, mem=MEM_ANON))])
    @uffd_test(mem=MEM_ALL, needs=PAGEMAP_WP)

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

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from uffdwp import kernel_facts as kf
from uffdwp import native
from uffdwp.errors import UffdError
from uffdwp.kernel_facts import Feature, RegisterMode
from uffdwp.known_bugs import KNOWN_BUGS
from uffdwp.memory import MemType, Region
from uffdwp.messages import Message, PageFault
from uffdwp.runner import precondition
from uffdwp.runner.bugcheck import bug_check
from uffdwp.uffd import Userfaultfd

from . import support
from .capabilities import STRESS_SCALE, USER_MODE_ONLY, Capability
from .support import OnThread

# Test groups: memory types by their traits in the one table (uffdwp.memory.MemType).
MEM_ALL = MemType.where()
MEM_ANON = MemType.where(anonymous=True)
MEM_SHMEM = MemType.where(file_backed=True, hugetlb=False)
MEM_HUGETLB = MemType.where(hugetlb=True)
MEM_FILE = MemType.where(file_backed=True)  # backed by a memfd (page cache)
MEM_SHARED = MemType.where(shared=True)
MEM_PRIVATE = MemType.where(shared=False)
MEM_NOT_HUGETLB = MemType.where(hugetlb=False)
MEM_SWAPPABLE = MemType.where(swappable=True)

T = TypeVar("T")


def stress(count: int, minimum: int = 1) -> int:
    """A stress test's *count* (writes, cycles) scaled for this machine."""
    return max(minimum, int(count * STRESS_SCALE))


WP = RegisterMode.WP
MISSING = RegisterMode.MISSING
MINOR = RegisterMode.MINOR


def implied_features(memtype: str, modes: RegisterMode) -> Feature:
    """Features the kernel must offer before *modes* can be registered on *memtype*."""
    return MemType.of(memtype).needs(modes)


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
class Requires:
    """What a test, or one of its parameters, needs beyond its memory type and modes: feature
    bits of the handshake and named capabilities of the host (capabilities.py)."""

    features: Feature = Feature(0)
    needs: tuple[Capability, ...] = ()
    mem: tuple[str, ...] = ()  # only on these memory types (all where empty)

    def applies_to(self, memtype: str | None) -> bool:
        return not self.mem or memtype in self.mem

    def __or__(self, other: Requires) -> Requires:
        return Requires(self.features | other.features,
                        self.needs + tuple(c for c in other.needs if c not in self.needs))

    def missing(self, supported: Feature | None) -> str | None:
        """The skip reason for the first thing this host lacks, or None if it has all."""
        if self.features:
            if supported is None:
                raise ValueError("features are required: pass what the kernel supports")
            reason = missing_reason(self.features, supported)
            if reason:
                return reason
        return next((why for c in self.needs if (why := c.missing())), None)


def requires(features: int = 0, needs: Capability | tuple[Capability, ...] = (), *,
             mem: tuple[str, ...] = ()) -> pytest.MarkDecorator:
    """Extra needs of one parameter of a test (``pytest.param(True, marks=requires(...))``,
    where *mem* names the memory types on which that parameter needs them) or of one memory
    type (``@uffd_test(per_mem={"anon": requires(...)})``)."""
    return pytest.mark.uffd_requires(Requires(Feature(features), _caps(needs), tuple(mem)))


def _caps(needs: Capability | tuple[Capability, ...]) -> tuple[Capability, ...]:
    return (needs,) if isinstance(needs, Capability) else tuple(needs)


@dataclass(frozen=True)
class UffdSpec:
    """What a test declares: the marker the runner reads."""

    features: Feature = Feature(0)
    modes: RegisterMode = WP
    # key of known_bugs.KNOWN_BUGS this test reproduces (a tuple where its checks show several
    # bugs, the first one named in reports while it passes), or memory type -> key where the bug
    # is specific to some types
    bug: str | tuple[str, ...] | Mapping[str, str] | None = None
    needs: tuple[Capability, ...] = ()

    def bugs_for(self, memtype: str | None) -> tuple[str, ...]:
        bug = self.bug.get(memtype or "") if isinstance(self.bug, Mapping) else self.bug
        return (bug,) if isinstance(bug, str) else tuple(bug or ())

    def bug_for(self, memtype: str | None) -> str | None:
        bugs = self.bugs_for(memtype)
        return bugs[0] if bugs else None

    def requires(self, memtype: str | None) -> Requires:
        """Everything a case of this test on *memtype* (None: no memory type) needs."""
        implied = MemType.of(memtype or MemType.ANON).needs(self.modes)
        return Requires(self.features | implied, self.needs)


def uffd_test(*, mem: tuple[str, ...] | None = MEM_ALL, modes: int | None = None,
              features: int = 0, needs: Capability | tuple[Capability, ...] = (),
              per_mem: Mapping[str, pytest.MarkDecorator] | None = None,
              bug: str | tuple[str, ...] | Mapping[str, str] | None = None, timeout: float = 20):
    """Declare a conformance test: memory types × modes × required features and capabilities
    (+ known bug). *mem* None: the test maps no memory of a type (not parametrized), and
    registers nothing unless *modes* says so; *modes* defaults to WP for the others.
    *per_mem* adds needs to some memory types (``requires(...)``)."""
    modes = (0 if mem is None else WP) if modes is None else modes
    for name in mem or ():
        if not MemType.of(name).takes(modes):
            raise ValueError(f"{RegisterMode(modes)!r} does not apply to {name} memory")
    unknown_types = set(per_mem or ()) - set(mem or ())
    if unknown_types:
        raise ValueError(f"per_mem names types the test does not run on: {unknown_types}")
    keys = (list(bug.values()) if isinstance(bug, Mapping) else [bug] if isinstance(bug, str)
            else list(bug or ()))
    unknown = [k for k in keys if k not in KNOWN_BUGS]
    if unknown:
        raise ValueError(f"unknown bug key(s) {unknown}")
    spec = UffdSpec(Feature(features), RegisterMode(modes), bug, _caps(needs))

    def decorate(fn):
        if mem is not None:
            values = [pytest.param(m, marks=per_mem[m]) if per_mem and m in per_mem else m
                      for m in mem]
            fn = pytest.mark.parametrize("memtype", values)(fn)
        fn = pytest.mark.uffd(spec)(fn)
        return pytest.mark.timeout(timeout)(fn)

    return decorate


def uffd_module(*, modes: int = WP, features: int = 0) -> pytest.MarkDecorator:
    """The declaration for a whole module (``pytestmark = uffd_module(...)``) whose tests use
    userfaultfd through a higher layer (the snapshot engine) rather than ``ctx``: a test
    without its own @uffd_test skips, naming the feature, where the kernel lacks it."""
    return pytest.mark.uffd(UffdSpec(Feature(features), RegisterMode(modes)))


# fork() with and without EVENT_FORK: the "event" case declares the feature.
FORK_EVENT = pytest.mark.parametrize(
    "with_event", [False, pytest.param(True, marks=requires(Feature.EVENT_FORK))],
    ids=["no-event", "event"])


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
    _stores: list[OnThread] = field(default_factory=list)
    _writers: list[native.Writer] = field(default_factory=list)
    _registered: list[tuple[Userfaultfd, int, int]] = field(default_factory=list)

    @property
    def mem_type(self) -> MemType:
        """The case's memory type, with its traits (shared, file_backed, hugetlb, ...)."""
        return MemType.of(self.memtype)

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
        region = support.allocate_or_skip(memtype or self.memtype, pages=pages, **kw)
        self._regions.append(region)
        return region

    # --- userfaultfds --------------------------------------------------------------------------
    def features(self, extra: int = 0) -> Feature:
        """What a test's uffd asks for: its declared and implied features, THREAD_ID if there."""
        want = self.spec.features | implied_features(self.memtype, self.spec.modes) | extra
        return Feature(want | (self.supported & Feature.THREAD_ID))

    def uffd(self, extra: int = 0, features: int | None = None, **open_args) -> Userfaultfd:
        if open_args.get("user_mode_only") and USER_MODE_ONLY not in self.spec.needs:
            raise ValueError("a test opening with UFFD_USER_MODE_ONLY declares "
                             "needs=USER_MODE_ONLY")
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
    def store(self, address: int, value: int = 0xC0FFEE) -> OnThread:
        """A store from C on its own thread, joined at cleanup."""
        thread = support.store(address, value)
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

    def own(self, thing: T) -> T:
        """Clean *thing* (a Userfaultfd or a native.Writer made elsewhere) up with the rest."""
        if isinstance(thing, Userfaultfd):
            self._uffds.append(thing)
        elif isinstance(thing, native.Writer):
            self._writers.append(thing)
        else:
            raise TypeError(f"cannot own {thing!r}")
        return thing

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
