# SPDX-License-Identifier: GPL-2.0-only
"""A userfaultfd: open, handshake, register, resolve, read messages.

Every ioctl goes through cffi, which releases the GIL for the call, so one Python thread may
resolve faults while another blocks in a native store (see uffdwp.native for handlers that need
no Python at all).
"""

from __future__ import annotations

import errno
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from . import kernel_facts as kf
from ._ffi import address_of, ffi, lib
from .errors import UffdError, check, error_for
from .kernel_facts import Feature, Ioctl, RegisterMode
from .memory import PAGE_SIZE
from .messages import MSG_SIZE, Message, parse_many

DEV_USERFAULTFD = "/dev/userfaultfd"
OpenVia = Literal["syscall", "dev", "auto"]


@dataclass(frozen=True)
class ApiResult:
    """The answer of UFFDIO_API: the kernel's supported features and the fd's ioctls."""

    api: int
    features: Feature
    ioctls: Ioctl


def open_fd(via: OpenVia = "syscall", *, nonblock: bool = True, cloexec: bool = True,
            user_mode_only: bool = False) -> int:
    """Create a raw userfaultfd and return its descriptor (no handshake yet).

    *via* ``"syscall"`` uses userfaultfd(2); ``"dev"`` uses /dev/userfaultfd and
    USERFAULTFD_IOC_NEW (6.1+); ``"auto"`` tries the syscall, then the device on EPERM.
    """
    flags = (os.O_CLOEXEC if cloexec else 0) | (os.O_NONBLOCK if nonblock else 0)
    flags |= kf.UFFD_USER_MODE_ONLY if user_mode_only else 0
    if via == "dev":
        return check(lib.uffdwp_open_dev(DEV_USERFAULTFD.encode(), flags), "open(/dev/userfaultfd)")
    fd = lib.uffdwp_open_syscall(flags)
    if fd < 0 and via == "auto" and os.path.exists(DEV_USERFAULTFD):
        fd = lib.uffdwp_open_dev(DEV_USERFAULTFD.encode(), flags)
        return check(fd, "open(/dev/userfaultfd)")
    return check(fd, "open(syscall)")


class Userfaultfd:
    """One userfaultfd descriptor and the operations on it.

    >>> with Userfaultfd.open() as uffd:
    ...     uffd.api(Feature.PAGEFAULT_FLAG_WP | Feature.THREAD_ID)
    ...     uffd.register(region.address, region.length, RegisterMode.WP)
    ...     uffd.writeprotect(region.address, region.length)
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.api_result: ApiResult | None = None
        self._enabled = Feature(0)

    # --- lifetime ------------------------------------------------------------------------------
    @classmethod
    def open(cls, via: OpenVia = "syscall", *, nonblock: bool = True, cloexec: bool = True,
             user_mode_only: bool = False) -> Userfaultfd:
        return cls(open_fd(via, nonblock=nonblock, cloexec=cloexec, user_mode_only=user_mode_only))

    @classmethod
    def create(cls, features: Feature | int = 0, **open_args: Any) -> Userfaultfd:
        """Open and handshake in one step, asking for exactly *features*."""
        uffd = cls.open(**open_args)
        try:
            uffd.api(features)
        except BaseException:
            uffd.close()
            raise
        return uffd

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("userfaultfd is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> Userfaultfd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass

    def __repr__(self) -> str:
        features = f" features={int(self._enabled):#x}" if self.api_result else ""
        return f"<Userfaultfd fd={self._fd}{features}>"

    @property
    def features(self) -> Feature:
        """Features this fd has: those asked of api() (the kernel answers with every feature it
        supports, but enables only what was asked). Empty before api()."""
        return self._enabled

    # --- handshake and registration ------------------------------------------------------------
    def api(self, features: Feature | int = 0, api: int = kf.UFFD_API) -> ApiResult:
        """UFFDIO_API. With features=0 the kernel answers all it supports."""
        arg = ffi.new("struct uffdio_api *", {"api": api, "features": features})
        self._ioctl("UFFDIO_API", arg, detail=f"api={api:#x} features={features:#x}")
        self.api_result = ApiResult(arg.api, Feature(arg.features), Ioctl(arg.ioctls))
        self._enabled = Feature(features)
        return self.api_result

    def register(self, start: int, length: int, mode: RegisterMode | int) -> Ioctl:
        """UFFDIO_REGISTER in *mode* (RegisterMode flags; a plain int is taken as those bits,
        unknown ones included, for tests of the kernel's checks); returns the ioctls the range
        supports."""
        mode = RegisterMode(mode)
        if start % PAGE_SIZE or length % PAGE_SIZE or length <= 0:
            # the kernel says only EINVAL, which reads like an unsupported mode
            raise UffdError(errno.EINVAL, "UFFDIO_REGISTER",
                            f"the range is not page aligned: start and length must be "
                            f"non-zero multiples of the page size ({PAGE_SIZE}; of the huge "
                            "page size for hugetlb)",
                            f"{start:#x}+{length:#x}")
        arg = ffi.new("struct uffdio_register *",
                      {"range": {"start": start, "len": length}, "mode": int(mode)})
        self._ioctl("UFFDIO_REGISTER", arg, detail=f"{start:#x}+{length:#x} mode={mode!r}")
        return Ioctl(arg.ioctls)

    def unregister(self, start: int, length: int) -> None:
        self._ioctl("UFFDIO_UNREGISTER", self._range(start, length))

    # --- resolving -----------------------------------------------------------------------------
    def writeprotect(self, start: int, length: int, protect: bool = True, *,
                     dontwake: bool = False) -> None:
        """UFFDIO_WRITEPROTECT: protect, or unprotect (which wakes waiters unless *dontwake*)."""
        mode = (kf.MODES["UFFDIO_WRITEPROTECT_MODE_WP"] if protect else 0) | (
            kf.MODES["UFFDIO_WRITEPROTECT_MODE_DONTWAKE"] if dontwake else 0)
        arg = ffi.new("struct uffdio_writeprotect *",
                      {"range": {"start": start, "len": length}, "mode": mode})
        self._ioctl("UFFDIO_WRITEPROTECT", arg, detail=f"{start:#x}+{length:#x} mode={mode}")

    def unprotect(self, start: int, length: int, *, dontwake: bool = False) -> None:
        self.writeprotect(start, length, False, dontwake=dontwake)

    def copy(self, dst: int, src: bytes | bytearray | memoryview | int, length: int | None = None,
             *, wp: bool = False, dontwake: bool = False) -> int:
        """UFFDIO_COPY *src* (bytes or an address) to *dst*; returns bytes copied."""
        keep = None
        if not isinstance(src, int):
            keep = ffi.from_buffer(src)
            length = len(keep) if length is None else length
            src = int(ffi.cast("uintptr_t", keep))
        if length is None:
            raise ValueError("length is required when src is an address")
        mode = (kf.MODES["UFFDIO_COPY_MODE_WP"] if wp else 0) | (
            kf.MODES["UFFDIO_COPY_MODE_DONTWAKE"] if dontwake else 0)
        arg = ffi.new("struct uffdio_copy *", {"dst": dst, "src": src, "len": length, "mode": mode})
        self._ioctl("UFFDIO_COPY", arg, result=lambda: arg.copy)
        del keep
        return int(arg.copy)

    def zeropage(self, start: int, length: int, *, dontwake: bool = False) -> int:
        mode = kf.MODES["UFFDIO_ZEROPAGE_MODE_DONTWAKE"] if dontwake else 0
        arg = ffi.new("struct uffdio_zeropage *",
                      {"range": {"start": start, "len": length}, "mode": mode})
        self._ioctl("UFFDIO_ZEROPAGE", arg, result=lambda: arg.zeropage)
        return int(arg.zeropage)

    def continue_(self, start: int, length: int, *, wp: bool = False,
                  dontwake: bool = False) -> int:
        """UFFDIO_CONTINUE (minor faults): map the page cache page; *wp* maps it protected."""
        mode = (kf.MODES["UFFDIO_CONTINUE_MODE_WP"] if wp else 0) | (
            kf.MODES["UFFDIO_CONTINUE_MODE_DONTWAKE"] if dontwake else 0)
        arg = ffi.new("struct uffdio_continue *",
                      {"range": {"start": start, "len": length}, "mode": mode})
        self._ioctl("UFFDIO_CONTINUE", arg, result=lambda: arg.mapped)
        return int(arg.mapped)

    def wake(self, start: int, length: int) -> None:
        self._ioctl("UFFDIO_WAKE", self._range(start, length))

    def poison(self, start: int, length: int, *, dontwake: bool = False) -> int:
        mode = kf.MODES["UFFDIO_POISON_MODE_DONTWAKE"] if dontwake else 0
        arg = ffi.new("struct uffdio_poison *",
                      {"range": {"start": start, "len": length}, "mode": mode})
        self._ioctl("UFFDIO_POISON", arg, result=lambda: arg.updated)
        return int(arg.updated)

    def move(self, dst: int, src: int, length: int, *, dontwake: bool = False,
             allow_src_holes: bool = False) -> int:
        mode = (kf.MODES["UFFDIO_MOVE_MODE_DONTWAKE"] if dontwake else 0) | (
            kf.MODES["UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES"] if allow_src_holes else 0)
        arg = ffi.new("struct uffdio_move *", {"dst": dst, "src": src, "len": length, "mode": mode})
        self._ioctl("UFFDIO_MOVE", arg, result=lambda: arg.move)
        return int(arg.move)

    # --- messages ------------------------------------------------------------------------------
    @property
    def blocking(self) -> bool:
        return os.get_blocking(self.fileno())

    def poll(self, timeout: float | None = None) -> bool:
        """True if a message is ready within *timeout* seconds (None: wait for ever).

        The kernel answers POLLERR for a blocking userfaultfd, so poll needs O_NONBLOCK
        (the default of open())."""
        if self.blocking:
            raise error_for(errno.EINVAL, "poll", "userfaultfd opened without O_NONBLOCK; "
                            "poll() on it always reports POLLERR")
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        return check(lib.uffdwp_poll_in(self.fileno(), ms), "poll") > 0

    def read(self, max_messages: int = 16, timeout: float | None = None) -> list[Message]:
        """Read pending messages.

        On a non-blocking fd (the default) wait up to *timeout* seconds (None: for ever) and
        return [] if none came. On a blocking fd, *timeout* must be None and read(2) blocks."""
        buf = ffi.new("char[]", max_messages * MSG_SIZE)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self.blocking:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not self.poll(left):
                    return []
            elif timeout is not None:
                raise ValueError("a timeout needs a non-blocking userfaultfd")
            n = lib.uffdwp_read_msgs(self.fileno(), buf, max_messages)
            if n == -errno.EAGAIN:  # woken before we read (another reader, or a wake)
                continue
            check(n, "read")
            return parse_many(ffi.unpack(buf, n * MSG_SIZE))

    def read_one(self, timeout: float = 5.0) -> Message:
        """Exactly one message within *timeout*, or TimeoutError."""
        msgs = self.read(1, timeout)
        if not msgs:
            raise TimeoutError(f"no userfaultfd message within {timeout}s")
        return msgs[0]

    # --- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _range(start: int, length: int) -> Any:  # a cffi struct uffdio_range *
        return ffi.new("struct uffdio_range *", {"start": start, "len": length})

    def _ioctl(self, name: str, arg: Any, detail: str = "",
               result: Callable[[], int] | None = None) -> None:
        ret = lib.uffdwp_ioctl(self.fileno(), kf.IOCTLS[name].request, arg)
        if ret < 0:
            # COPY/ZEROPAGE/… report the errno in the struct too; the ioctl's own is what counts.
            partial = result() if result else None
            extra = f" done={partial}" if partial and partial > 0 else ""
            raise error_for(-ret, name, detail + extra)


@functools.lru_cache(maxsize=1)
def supported_features() -> Feature:
    """The features=0 handshake on a throw-away fd: every feature this kernel supports
    (raises UffdError if no userfaultfd can be made). Asked once per process."""
    with Userfaultfd.open(via="auto") as uffd:
        return uffd.api(0).features


__all__ = ["ApiResult", "Userfaultfd", "address_of", "open_fd", "supported_features"]
