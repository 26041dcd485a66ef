# SPDX-License-Identifier: GPL-2.0-only
"""Who may create a userfaultfd, and what a user-mode-only one handles.

fs/userfaultfd.c userfaultfd_syscall_allowed(): UFFD_USER_MODE_ONLY (5.11) is always allowed;
otherwise CAP_SYS_PTRACE, or vm.unprivileged_userfaultfd=1 (5.2). /dev/userfaultfd (6.1) is
governed by its file mode only (USERFAULTFD_IOC_NEW does not look at the sysctl).
handle_userfault(): a fault without FAULT_FLAG_USER (the kernel touching user memory, e.g.
copy_to_user in read(2)) on a UFFD_USER_MODE_ONLY context is not delivered: the access fails
(VM_FAULT_SIGBUS -> the syscall returns EFAULT). userfaultfd(2): "UFFD_USER_MODE_ONLY ... only
handle page faults resulting from user-space".
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from uffdwp import kernel_facts as kf
from uffdwp import native
from uffdwp._ffi import lib
from uffdwp.errors import UffdError
from uffdwp.uffd import DEV_USERFAULTFD, Userfaultfd

from .observe import wp_pages
from .uffdtest import MEM_ALL, MISSING, WP, require_user_mode_only, uffd_test

SYSCTL = Path("/proc/sys/vm/unprivileged_userfaultfd")
SYSCTL_LOCK = Path("/tmp/uffdwp-unprivileged-userfaultfd.lock")
NOBODY = 65534
OPEN_FLAGS = os.O_CLOEXEC | os.O_NONBLOCK
CHILD_FAILED = -100000


# --- the sysctl (global: serialize every test that sets it, restore it afterwards) -------------
@pytest.fixture
def sysctl() -> Iterator[Callable[[int], None]]:
    if os.geteuid() != 0:
        pytest.skip("setting vm.unprivileged_userfaultfd and setuid() need root")
    if not SYSCTL.exists():
        pytest.skip("vm.unprivileged_userfaultfd (mainline 5.2) absent on this kernel")
    with open(SYSCTL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other workers / concurrent runs of these tests
        old = SYSCTL.read_text().strip()

        def set_value(value: int) -> None:
            SYSCTL.write_text(f"{value}\n")
            assert SYSCTL.read_text().strip() == str(value)

        try:
            yield set_value
        finally:
            SYSCTL.write_text(old + "\n")


def in_unprivileged_child(fn: Callable[[], int], timeout: float = 10.0) -> int:
    """Run *fn* in a forked child that dropped to uid/gid 65534 with no groups (so no
    capabilities); returns fn's int result (CHILD_FAILED - n if the child raised)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: simple work only, then _exit
        try:
            os.close(r)
            result = CHILD_FAILED
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = fn()
        except BaseException as exc:
            result = CHILD_FAILED - (getattr(exc, "errno", None) or 1)
        finally:
            os.write(w, struct.pack("q", result))
            os._exit(0)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], timeout)
        data = os.read(r, 8) if ready else b""
    finally:
        os.close(r)
        if not data:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert len(data) == 8, f"unprivileged child gave no answer within {timeout}s"
    return struct.unpack("q", data)[0]


def _syscall_and_api(flags: int) -> int:
    """userfaultfd(flags) then UFFDIO_API: 0 on success, -errno of the step that failed."""
    fd = lib.uffdwp_open_syscall(flags)
    if fd < 0:
        return fd
    try:
        Userfaultfd(fd).api(0)
    except UffdError as exc:
        return -exc.errno
    return 0


def _as_nobody_syscall(flags: int) -> int:
    return in_unprivileged_child(lambda: _syscall_and_api(flags))


# --- creating an fd -------------------------------------------------------------------------
def test_sysctl0_unprivileged_plain_eperm(sysctl):
    """vm.unprivileged_userfaultfd=0: an unprivileged process gets EPERM from userfaultfd(0)."""
    sysctl(0)
    assert _as_nobody_syscall(OPEN_FLAGS) == -errno.EPERM


def test_sysctl0_unprivileged_user_mode_only_allowed(sysctl):
    """vm.unprivileged_userfaultfd=0: UFFD_USER_MODE_ONLY is always allowed (and usable)."""
    require_user_mode_only()
    sysctl(0)
    assert _as_nobody_syscall(OPEN_FLAGS | kf.UFFD_USER_MODE_ONLY) == 0


def test_sysctl1_unprivileged_plain_allowed(sysctl):
    """vm.unprivileged_userfaultfd=1: an unprivileged process may create a full userfaultfd."""
    sysctl(1)
    assert _as_nobody_syscall(OPEN_FLAGS) == 0
    require_user_mode_only()
    assert _as_nobody_syscall(OPEN_FLAGS | kf.UFFD_USER_MODE_ONLY) == 0


def test_sysctl0_root_plain_allowed(sysctl):
    """vm.unprivileged_userfaultfd=0 does not restrict CAP_SYS_PTRACE (root)."""
    sysctl(0)
    assert _syscall_and_api(OPEN_FLAGS) == 0


def test_unknown_open_flag_einval(supported):
    """userfaultfd(2) flags other than O_CLOEXEC, O_NONBLOCK, UFFD_USER_MODE_ONLY: EINVAL."""
    assert lib.uffdwp_open_syscall(OPEN_FLAGS | 0x2) == -errno.EINVAL


def _dev_or_skip() -> os.stat_result:
    try:
        return os.stat(DEV_USERFAULTFD)
    except FileNotFoundError:
        pytest.skip("/dev/userfaultfd (mainline 6.1) absent on this kernel")


def test_dev_root_opens_and_creates(supported):
    """Root opens /dev/userfaultfd; USERFAULTFD_IOC_NEW gives a working userfaultfd."""
    _dev_or_skip()
    with Userfaultfd.open(via="dev") as uffd:
        assert uffd.api(0).api == kf.UFFD_API


def test_dev_unprivileged_open_eacces(sysctl):
    """/dev/userfaultfd with its default mode (0600 root): an unprivileged open() is EACCES."""
    st = _dev_or_skip()
    if st.st_uid != 0 or stat.S_IMODE(st.st_mode) & 0o066:
        pytest.skip(f"/dev/userfaultfd permissions changed here "
                    f"(uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})")
    sysctl(1)  # the device ignores the sysctl either way

    def try_open() -> int:
        try:
            os.close(os.open(DEV_USERFAULTFD, os.O_RDWR | os.O_CLOEXEC))
        except OSError as exc:
            return -exc.errno
        return 0

    assert in_unprivileged_child(try_open) == -errno.EACCES


def test_dev_fd_bypasses_sysctl(sysctl):
    """Access to /dev/userfaultfd is checked at open(): a device fd opened by root and handed to
    an unprivileged process creates full (kernel-fault capable) userfaultfds even with
    vm.unprivileged_userfaultfd=0, where its own userfaultfd(0) is EPERM."""
    _dev_or_skip()
    sysctl(0)
    dev = os.open(DEV_USERFAULTFD, os.O_RDWR)  # inherited by the child (no O_CLOEXEC)
    try:
        def via_inherited() -> int:
            try:
                fd = fcntl.ioctl(dev, kf.USERFAULTFD_IOC_NEW, OPEN_FLAGS)
            except OSError as exc:
                return -exc.errno
            Userfaultfd(fd).api(0)
            return 0

        assert in_unprivileged_child(via_inherited) == 0
        assert _as_nobody_syscall(OPEN_FLAGS) == -errno.EPERM
    finally:
        os.close(dev)


# --- user-mode-only: kernel-mode accesses are not delivered ------------------------------------
def _read_into(address: int, length: int, data: bytes):
    """read(2) from a pipe holding *data* into [address, address+length) on a helper thread
    (the kernel writes the user memory: a kernel-mode fault). Returns (thread, result dict)."""
    r, w = os.pipe()
    os.write(w, data)
    result: dict[str, object] = {}

    def run() -> None:
        from uffdwp._ffi import ffi
        buf = ffi.buffer(ffi.cast("char *", address), length)
        try:
            result["n"] = os.readv(r, [buf])
        except OSError as exc:
            result["errno"] = exc.errno
        finally:
            os.close(r)
            os.close(w)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


@uffd_test(mem=MEM_ALL)
def test_user_mode_only_wp_kernel_write_efault(ctx, memtype):
    """A UFFD_USER_MODE_ONLY fd registered in WP mode: read(2) into a protected page fails with
    EFAULT at once (no message, nothing written, page still protected)."""
    region = ctx.region(2)
    region.fill(0x5A)
    uffd = ctx.uffd(user_mode_only=True)
    ctx.register(uffd, region, WP)
    uffd.writeprotect(region.address, region.length)
    t, result = _read_into(region.page(1), 64, b"K" * 64)
    t.join(5)
    assert not t.is_alive(), "kernel-mode write to a protected page blocked on a user-mode-only fd"
    assert result == {"errno": errno.EFAULT}
    assert uffd.read(4, 0.05) == [], "a kernel-mode fault must not be delivered"
    assert region.read(region.page_size, 64) == b"\x5a" * 64
    assert wp_pages(region.address, region.length, region.page_size) == [True, True]


@uffd_test(mem=MEM_ALL)
def test_user_mode_only_wp_user_write_delivered(ctx, memtype):
    """The same user-mode-only fd does get the fault of a user-space store, which blocks until
    unprotected: the control for the EFAULT test above."""
    region = ctx.region(1)
    region.fill(0x5A)
    uffd = ctx.uffd(user_mode_only=True)
    ctx.register(uffd, region, WP)
    uffd.writeprotect(region.address, region.length)
    store = ctx.store(region.address, 0xD00D)
    fault = ctx.fault(uffd)
    assert fault.is_wp and fault.address == region.address
    assert not store.finished(0.1)
    uffd.unprotect(region.address, region.length)
    assert store.finished(5)
    assert native.load_u64(region.address) == 0xD00D


@uffd_test(mem=MEM_ALL)
def test_full_fd_kernel_write_is_delivered(ctx, memtype):
    """Without UFFD_USER_MODE_ONLY a kernel-mode write (read(2) into a protected page) raises
    a WP fault message and waits for the unprotect, then completes with the data."""
    region = ctx.region(1)
    region.fill(0x5A)
    uffd = ctx.uffd()
    ctx.register(uffd, region, WP)
    uffd.writeprotect(region.address, region.length)
    t, result = _read_into(region.address, 64, b"K" * 64)
    fault = ctx.fault(uffd)
    assert fault.is_wp and fault.is_write and fault.address == region.address
    time.sleep(0.05)
    assert t.is_alive() and not result, "the read must wait for the fault to be resolved"
    uffd.unprotect(region.address, region.length)
    t.join(5)
    assert result == {"n": 64}
    assert region.read(0, 64) == b"K" * 64


@uffd_test(mem=MEM_ALL, modes=MISSING)
def test_user_mode_only_missing_kernel_write_efault(ctx, memtype):
    """MISSING mode on a user-mode-only fd: read(2) into a missing page gives EFAULT and
    queues no message; a user-space access of the same page is delivered."""
    region = ctx.region(1)
    uffd = ctx.uffd(user_mode_only=True)
    ctx.register(uffd, region, MISSING)
    t, result = _read_into(region.address, 64, b"M" * 64)
    t.join(5)
    assert not t.is_alive() and result == {"errno": errno.EFAULT}
    assert uffd.read(4, 0.05) == []
    store = ctx.store(region.address, 1)
    fault = ctx.fault(uffd)
    assert not fault.is_wp and fault.address == region.address
    uffd.copy(region.address, bytes(region.page_size))
    assert store.finished(5)
    assert native.load_u64(region.address) == 1
