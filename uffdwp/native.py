# SPDX-License-Identifier: GPL-2.0-only
"""Native threads that never need the GIL: a fault-servicing handler and a timed writer.

A Python write to write-protected memory faults while holding the GIL, so a handler written in
Python in the same process would deadlock. These run in C threads started by the binding.
"""

from __future__ import annotations

import enum
import errno
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._ffi import ffi, lib
from .errors import check
from .kernel_facts import FaultFlag
from .uffd import Userfaultfd


# The values come from the C enums (uffdwp_native.h); tests/test_native_enums.py holds the
# members against them.
class Policy(enum.IntEnum):
    UNPROTECT = lib.UFFDWP_POLICY_UNPROTECT  # unprotect the faulting page: wakes the writer
    # copy the page out (to copy_to at the same offset), then unprotect
    COPY_UNPROTECT = lib.UFFDWP_POLICY_COPY_UNPROTECT
    RECORD = lib.UFFDWP_POLICY_RECORD  # record only: the caller resolves


class Pattern(enum.IntEnum):
    SEQUENTIAL = lib.UFFDWP_PATTERN_SEQUENTIAL
    RANDOM = lib.UFFDWP_PATTERN_RANDOM
    HOTSPOT = lib.UFFDWP_PATTERN_HOTSPOT  # 90% of writes to the first 10% of pages


@dataclass(frozen=True)
class FaultRecord:
    t_read_ns: int
    t_done_ns: int  # 0 if the handler did not resolve it
    address: int
    flags: FaultFlag
    thread_id: int
    event: int
    arg2: int
    arg3: int
    error: int


@dataclass(frozen=True)
class HandlerStats:
    messages: int
    wp_faults: int
    missing_faults: int
    minor_faults: int
    events: int
    resolved: int
    errors: int
    dropped_records: int
    running: bool
    last_error: int
    # pages given up on after lib.UFFDWP_MAX_REFAULTS resolutions that did not hold
    gave_up: int = 0


class FaultHandler:
    """A C thread that reads *uffd* and resolves faults by *policy*.

    Stopping it (stop(), the end of a ``with`` block, or garbage collection) unprotects and wakes
    every range it was given, so no writer stays blocked.
    """

    def __init__(self, uffd: Userfaultfd | int, ranges: Iterable[tuple[int, int]],
                 policy: Policy = Policy.UNPROTECT, *, page_size: int = 4096,
                 copy_to: int = 0, record_capacity: int = 65536) -> None:
        self._h = None  # stop() and __del__ are safe whatever happens below
        self.cleanup_failures = 0
        fd = uffd if isinstance(uffd, int) else uffd.fileno()
        self.ranges = [(int(start), int(length)) for start, length in ranges]
        flat = [v for rng in self.ranges for v in rng]
        err = ffi.new("int *")
        h = lib.uffdwp_handler_start(fd, int(policy), page_size,
                                     ffi.new("uint64_t[]", flat or [0]), len(self.ranges),
                                     copy_to, record_capacity, err)
        if h == ffi.NULL:
            check(err[0], "handler_start")
        self._h = h

    @property
    def stats(self) -> HandlerStats:
        s = ffi.new("struct uffdwp_handler_stats *")
        lib.uffdwp_handler_get_stats(self._live(), s)
        return HandlerStats(s.messages, s.wp_faults, s.missing_faults, s.minor_faults, s.events,
                            s.resolved, s.errors, s.dropped_records, bool(s.running),
                            s.last_error, s.gave_up)

    def records(self) -> list[FaultRecord]:
        n = self.stats.messages
        buf = ffi.new("struct uffdwp_record[]", max(1, n))
        got = lib.uffdwp_handler_records(self._live(), buf, n)
        return [FaultRecord(r.t_read_ns, r.t_done_ns, r.address, FaultFlag(r.flags), r.tid,
                            r.event, r.arg2, r.arg3, r.error) for r in buf[0:got]]

    def wait_for(self, messages: int, timeout: float = 5.0) -> HandlerStats:
        """Wait until the handler has read *messages* messages; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while (stats := self.stats).messages < messages:
            if time.monotonic() > deadline:
                raise TimeoutError(f"handler saw {stats.messages} of {messages} messages "
                                   f"within {timeout}s")
            time.sleep(0.001)
        return stats

    def stop(self) -> HandlerStats | None:
        """Stop the thread, unprotect and wake every range; returns the final stats."""
        if self._h is None:
            return None
        final = self.stats
        h, self._h = self._h, None
        self.cleanup_failures = -lib.uffdwp_handler_stop(h)
        return final

    def _live(self) -> Any:  # the cffi handle
        if self._h is None:
            raise RuntimeError("fault handler is stopped")
        return self._h

    def __enter__(self) -> FaultHandler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        if getattr(self, "_h", None) is not None:
            self.stop()


@dataclass(frozen=True)
class WriteRecord:
    t_start_ns: int
    stall_ns: int
    address: int
    value: int


@dataclass(frozen=True)
class WriterStats:
    writes: int
    max_stall_ns: int
    total_stall_ns: int
    t_start_ns: int
    t_end_ns: int
    dropped_records: int
    histogram: tuple[int, ...]  # log2 buckets of stall in ns
    running: bool
    error: int = 0  # errno that stopped the writer (EFAULT: its range was unmapped), else 0


class Writer:
    """A C thread storing 64-bit values into a range and timing how long each store stalled.

    Store *i* writes ``value_base + i`` at ``offset_in_page`` of the page *pattern* picks;
    *rate* is stores per second (0: as fast as it can), *max_writes* 0 means until stop().
    """

    def __init__(self, address: int, length: int, *, page_size: int = 4096,
                 offset_in_page: int = 0, pattern: Pattern = Pattern.SEQUENTIAL, rate: int = 0,
                 max_writes: int = 0, seed: int = 1, value_base: int = 1,
                 record_capacity: int = 65536) -> None:
        self._w = None  # close() and __del__ are safe whatever happens below
        self.stalled_on_free = False
        for name, value in (("rate", rate), ("max_writes", max_writes),
                            ("record_capacity", record_capacity), ("length", length)):
            if value < 0:
                raise ValueError(f"Writer {name} must not be negative, not {value}")
        if not 0 <= offset_in_page <= page_size - 8:
            raise ValueError(f"offset_in_page {offset_in_page} leaves no room for a 64-bit "
                             f"store in a page of {page_size} bytes")
        err = ffi.new("int *")
        w = lib.uffdwp_writer_start(address, length, page_size, offset_in_page,
                                    int(pattern), rate, max_writes, seed, value_base,
                                    record_capacity, err)
        if w == ffi.NULL:
            check(err[0], "writer_start")
        self._w = w

    @property
    def stats(self) -> WriterStats:
        s = ffi.new("struct uffdwp_writer_stats *")
        lib.uffdwp_writer_get_stats(self._live(), s)
        return WriterStats(s.writes, s.max_stall_ns, s.total_stall_ns, s.t_start_ns, s.t_end_ns,
                           s.dropped_records, tuple(s.histogram), bool(s.running), -s.error)

    def records(self) -> list[WriteRecord]:
        n = self.stats.writes
        buf = ffi.new("struct uffdwp_write_record[]", max(1, n))
        got = lib.uffdwp_writer_records(self._live(), buf, n)
        return [WriteRecord(r.t_start_ns, r.stall_ns, r.address, r.value) for r in buf[0:got]]

    def raw_records(self) -> memoryview:
        """The log as one flat run of uint64 words, four per store (t_start_ns, stall_ns,
        address, value): millions of stores without a Python object each. Read a stopped
        writer's (a running one stores first and logs after)."""
        n = self.stats.writes
        buf = ffi.new("struct uffdwp_write_record[]", max(1, n))
        got = lib.uffdwp_writer_records(self._live(), buf, n)
        size = got * ffi.sizeof("struct uffdwp_write_record")
        return memoryview(ffi.buffer(buf, size)).cast("Q")  # the buffer keeps buf alive

    def wait(self, timeout: float) -> bool:
        """True once all writes are done; False if still running after *timeout* seconds."""
        return bool(lib.uffdwp_writer_wait(self._live(), int(timeout * 1000)) == 0)

    def request_stop(self) -> None:
        lib.uffdwp_writer_request_stop(self._live())

    def throttle(self, percent: int) -> None:
        """Keep the writer asleep *percent* (0..99) of the time, as QEMU's auto-converge
        throttles a vCPU: 10 ms slices, each followed by a sleep of percent/(100-percent) of
        it. 0 lets it run free again."""
        if not 0 <= percent <= 99:
            raise ValueError(f"a throttle is 0..99 percent, not {percent}")
        lib.uffdwp_writer_set_throttle(self._live(), percent)

    def close(self, timeout: float = 10.0) -> WriterStats | None:
        """Stop and join. Raises TimeoutError (and keeps the thread) if it is stuck in a fault."""
        if self._w is None:
            return None
        self.request_stop()
        if not self.wait(timeout):
            raise TimeoutError("writer thread is still blocked (a write fault nobody resolves?)")
        final = self.stats
        w, self._w = self._w, None
        lib.uffdwp_writer_free(w)
        return final

    def _live(self) -> Any:  # the cffi handle
        if self._w is None:
            raise RuntimeError("writer is closed")
        return self._w

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A writer left running would store into memory its owner may unmap next: stop it.
        # One still blocked in a fault is left alone (and leaked) rather than freed under it.
        w = getattr(self, "_w", None)
        if w is not None:
            lib.uffdwp_writer_request_stop(w)
            if lib.uffdwp_writer_wait(w, 1000) == 0:
                self._w = None
                lib.uffdwp_writer_free(w)


class Chain:
    """Test writers whose stores form a causal chain (csrc/chain_native.c): step i stores i+1
    to addrs[i % len(addrs)] from thread i % threads, once step i-1 is done. A consistent image
    of those addresses holds a prefix of the chain. *max_steps* 0: until stopped."""

    def __init__(self, addrs: Sequence[int], threads: int, max_steps: int = 0) -> None:
        err = ffi.new("int *")
        c = lib.uffdsnap_chain_start(ffi.new("uint64_t[]", list(addrs)), len(addrs), threads,
                                     max_steps, err)
        if c == ffi.NULL:
            check(err[0], "chain start")
        self._c: Any = c

    @property
    def steps(self) -> int:
        """Steps completed so far."""
        return int(lib.uffdsnap_chain_steps(self._c)) if self._c is not None else 0

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the threads and free them; False if one is still blocked after *timeout*
        (then it is left running, and its memory kept)."""
        if self._c is None:
            return True
        if lib.uffdsnap_chain_stop(self._c, int(timeout * 1000)) != 0:
            return False
        c, self._c = self._c, None
        lib.uffdsnap_chain_free(c)
        return True

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _fault(address: int, what: str) -> OSError:
    return OSError(errno.EFAULT, f"{what} at {address:#x}: {os.strerror(errno.EFAULT)} "
                                 "(not mapped, or not writable)")


def store_u64(address: int, value: int) -> None:
    """Store from C: a Python thread blocked in this fault does not hold the GIL.
    OSError (EFAULT) where *address* is not mapped writable."""
    if lib.uffdwp_store_u64(address, value) < 0:
        raise _fault(address, "store")


def load_u64(address: int) -> int:
    """OSError (EFAULT) where *address* is not mapped."""
    out = ffi.new("uint64_t *")
    if lib.uffdwp_load_u64(address, out) < 0:
        raise _fault(address, "load")
    return int(out[0])


def now_ns() -> int:
    return int(lib.uffdwp_now_ns())


def nearest_rank(n: int, q: float) -> int:
    """The index of the *q* quantile (0..1) among *n* sorted samples, by nearest rank: the
    one rule every percentile uffdwp reports follows."""
    return min(n - 1, int(q * (n - 1) + 0.5))


def percentile(samples: Sequence[int], q: float) -> int:
    """The *q* quantile (0..1) of *samples* by nearest rank (0 for no samples)."""
    if not samples:
        return 0
    ordered = sorted(samples)
    return ordered[nearest_rank(len(ordered), q)]


__all__ = ["Chain", "FaultHandler", "FaultRecord", "HandlerStats", "Pattern", "Policy",
           "WriteRecord", "Writer", "WriterStats", "load_u64", "nearest_rank", "now_ns",
           "percentile", "store_u64"]
