# SPDX-License-Identifier: GPL-2.0-only
"""How a test sees whether pages are write-protected: by pagemap's uffd-wp bit where the kernel
reports it (bit 57, PM_UFFD_WP, 5.13), else by the protection's effect.

The effect is what a write does. A plain store into a protected page would block in the fault
and wait for a resolution (which unprotects the page and wakes every waiter on it), so the probe
writes through the kernel instead: FUTEX_WAKE_OP adds 0 to the page's first word. The kernel
tries the atomic op, and on a write fault calls fault_in_user_writeable(), a fault without
FAULT_FLAG_ALLOW_RETRY. handle_userfault() never queues such a fault: it answers SIGBUS, and the
futex call fails with EFAULT at once (fs/userfaultfd.c, kernel/futex). So:

- protected: EFAULT, no message, nothing resolved, nobody woken, the protection stays;
- not protected: the op succeeds and writes the value that was there (data unchanged).

What the probe does change, and why tests observe with care:
- an unprotected page that was read-only for another reason (the zero page, a page fork() left
  copy-on-write) is made writable: the write fault copies it;
- a swapped-out page is swapped in (its uffd-wp bit moves onto the present pte);
so a test that also checks presence, swap or sharing checks those before it observes
protection. A page with no pte at all (never touched, or zapped) holds no protection on the
kernels that need the probe: uffd-wp pte markers arrived in 5.19, after pagemap's bit, so such
a page reads unprotected without a write. A VMA no longer registered in WP mode (unregistered,
closed, moved without EVENT_REMAP) cannot act on any bit left in its ptes: it reads unprotected
without a write too, because writing would make such a pte writable and hide a stale bit from
the test's next check.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import threading

import pytest

from uffdwp import kernel_facts as kf
from uffdwp import pagemap
from uffdwp.kernel_facts import Feature
from uffdwp.kernel_version import at_least, running
from uffdwp.memory import PAGE_SIZE, Region, allocate
from uffdwp.uffd import Userfaultfd

_PM_UFFD_WP = next(f for f in kf.PAGEMAP_FACTS if f.name == "PM_UFFD_WP")
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "riscv64": 98, "s390x": 238}
_FUTEX_WAKE_OP, _FUTEX_PRIVATE_FLAG = 5, 128
_FUTEX_OP_ADD_0 = 1 << 28  # FUTEX_OP(FUTEX_OP_ADD, 0, FUTEX_OP_CMP_EQ, 0)
PROBE_DEADLINE = 5.0  # seconds: the probe never blocks; if it ever did, fail instead of hanging


@functools.lru_cache(maxsize=1)
def pagemap_reports_wp() -> bool:
    """Whether /proc/pid/pagemap shows the uffd-wp bit here. It has no feature bit, so probe it:
    protect one populated anonymous page and look. A kernel at or after the release that brought
    the bit must show it (there a missing bit is a failure, not a way round).
    UFFDWP_OBSERVE=effect pretends it does not, to exercise the effect probe on a newer kernel
    (anonymous memory without WP_UNPOPULATED only: the probe knows no pte markers)."""
    if os.environ.get("UFFDWP_OBSERVE") == "effect":
        return False
    if at_least(running(), _PM_UFFD_WP.since):
        return True
    with allocate("anon", pages=1) as region, Userfaultfd.create(Feature.PAGEFAULT_FLAG_WP) as uffd:
        region.fill(1)
        uffd.register(region.address, region.length, kf.RegisterMode.WP)
        uffd.writeprotect(region.address, region.length)
        return pagemap.entry(region.address).uffd_wp


def require_pagemap_wp() -> None:
    """For a test whose subject is pagemap's bit itself: skip, naming the feature, where the
    kernel does not report it. Tests that only need to know about protection use wp_pages."""
    if not pagemap_reports_wp():
        pytest.skip(f"pagemap bit 57 (PM_UFFD_WP, mainline {_PM_UFFD_WP.since}) absent on this "
                    "kernel: this test checks the bit itself")


def vma_flags(pid: int | str = "self") -> list[tuple[int, int, set[str]]]:
    """(start, end, VmFlags) of each VMA (smaps: "wr" writable, "uw" uffd-wp registered)."""
    vmas: list[tuple[int, int, set[str]]] = []
    start = end = 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
            elif head == "VmFlags:":
                vmas.append((start, end, set(line.split()[1:])))
    return vmas


def _flags_at(vmas: list[tuple[int, int, set[str]]], address: int) -> set[str]:
    for start, end, flags in vmas:
        if start <= address < end:
            return flags
    raise LookupError(f"no VMA at {address:#x}")


def _futex_nr() -> int:
    machine = os.uname().machine
    if machine not in _SYS_FUTEX:
        raise RuntimeError(f"no futex syscall number for {machine}: add it to _SYS_FUTEX")
    return _SYS_FUTEX[machine]


def write_refused(address: int) -> bool:
    """Whether a write to the word at *address* is refused with a uffd-wp fault, probed without
    blocking (see the module docstring). Safe in a forked child: no thread, no GIL wait."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    word = ctypes.c_void_p(address & ~3)
    ret = libc.syscall(_futex_nr(), word, _FUTEX_WAKE_OP | _FUTEX_PRIVATE_FLAG, 0, None, word,
                       _FUTEX_OP_ADD_0)
    if ret >= 0:
        return False
    err = ctypes.get_errno()
    if err == errno.EFAULT:
        return True
    raise OSError(err, f"futex(FUTEX_WAKE_OP) probe at {address:#x}: {os.strerror(err)}")


def _probe_all(addresses: list[int], in_child: bool) -> list[bool]:
    """write_refused for each address; in the parent on a helper thread with a deadline."""
    if in_child:
        return [write_refused(a) for a in addresses]
    out: list = []

    def run() -> None:
        try:
            out.append([write_refused(a) for a in addresses])
        except BaseException as exc:  # handed to the caller's thread
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(PROBE_DEADLINE)
    if not out:  # never seen; the test's cleanup unprotects and wakes, which releases it
        raise RuntimeError(f"the write probe at {addresses[0]:#x}.. blocked: this kernel queued "
                           "a fault without FAULT_FLAG_ALLOW_RETRY")
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def wp_effect(addresses: list[int], in_child: bool = False) -> list[bool]:
    """Whether the pages at *addresses* (of this process) are write-protected, by effect."""
    state: dict[int, bool] = {}
    probe = []
    vmas = vma_flags()
    for a in addresses:
        entry = pagemap.entry(a)
        flags = _flags_at(vmas, a)
        if not (entry.present or entry.swapped):
            state[a] = False  # no pte to carry a bit (no uffd-wp pte markers before 5.19)
        elif "uw" not in flags:
            state[a] = False  # not registered in WP mode: no bit can act
        elif "wr" not in flags:
            raise RuntimeError(f"{a:#x} is in a read-only VMA: a write probe cannot tell "
                               "uffd-wp from the VMA's own protection")
        else:
            probe.append(a)
    if probe:
        state.update(zip(probe, _probe_all(probe, in_child)))
    return [state[a] for a in addresses]


def wp_pages(address: int, length: int, page_size: int = PAGE_SIZE,
             in_child: bool = False) -> list[bool]:
    """Whether each *page_size* page of [address, address+length) of this process is
    write-protected: pagemap's uffd-wp bit where the kernel reports it, else its effect.
    *in_child*: called in a forked child (no helper thread)."""
    if pagemap_reports_wp():
        return pagemap.uffd_wp(address, length, page_size)
    return wp_effect(list(range(address, address + length, page_size)), in_child)


def region_wp(region: Region) -> list[bool]:
    """Whether each page of *region* is write-protected (see wp_pages)."""
    return wp_pages(region.address, region.length, region.page_size)


def page_wp(address: int, in_child: bool = False) -> bool:
    """Whether the page at *address* is write-protected (see wp_pages)."""
    return wp_pages(address, PAGE_SIZE, in_child=in_child)[0]
