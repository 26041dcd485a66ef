# SPDX-License-Identifier: GPL-2.0-only
"""Exceptions of the binding: each carries the errno, the operation and a hint to act on."""

from __future__ import annotations

import errno as errno_mod
import os


class Error(Exception):
    """The root of every error uffdwp raises for a reason it can name: ``except uffdwp.Error``
    catches a failed userfaultfd call, unavailable memory, a snapshot, target or image error
    (each also keeps its older base: OSError, RuntimeError)."""


class UffdError(Error, OSError):
    """A userfaultfd operation failed.

    ``errno`` and ``strerror`` are as for OSError; ``operation`` names the call
    (``"UFFDIO_REGISTER"``, ``"open(syscall)"``…) and ``hint`` says what to do about it.
    """

    def __init__(self, err: int, operation: str, hint: str = "", detail: str = "") -> None:
        super().__init__(err, os.strerror(err))
        self.operation = operation
        self.hint = hint
        self.detail = detail

    def __str__(self) -> str:
        name = errno_mod.errorcode.get(self.errno or 0, str(self.errno))
        text = f"{self.operation}: {name} ({self.strerror})"
        if self.detail:
            text += f" [{self.detail}]"
        if self.hint:
            text += f" — {self.hint}"
        return text


class UffdPermissionError(UffdError, PermissionError):
    """EPERM/EACCES: the process may not create or use this userfaultfd."""


class UffdNotSupportedError(UffdError):
    """ENOSYS, ENOTTY or EINVAL for something this kernel does not offer."""


class UffdExistsError(UffdError, FileExistsError):
    """EEXIST: the page is already populated (COPY/ZEROPAGE/CONTINUE)."""


class UffdAgainError(UffdError, BlockingIOError):
    """EAGAIN: the address space changed under the call; read pending events, then retry."""


class MemoryUnavailableError(Error, RuntimeError):
    """The memory type cannot be had here (no huge pages reserved, no hugetlbfs…)."""


# What lets a process without CAP_SYS_PTRACE open a userfaultfd, for both ways of opening one:
# said in full by each refusal, so that whichever a user meets first names every remedy.
OPEN_REMEDIES = (
    "`sysctl vm.unprivileged_userfaultfd=1` (the syscall for every user), read-write access to "
    "/dev/userfaultfd (6.1+; 0600 root by default: a group of this user via chgrp/chmod or a "
    "udev rule), user-mode-only fds (user_mode_only=True, UFFD_USER_MODE_ONLY, 5.11+: faults "
    "from user space only), or run as root")

_OPEN_HINTS = {
    errno_mod.EPERM: (
        "vm.unprivileged_userfaultfd is 0 and this process lacks CAP_SYS_PTRACE; to open one: "
        + OPEN_REMEDIES),
    errno_mod.EACCES: (
        "/dev/userfaultfd is not accessible to this user; to open a userfaultfd: "
        + OPEN_REMEDIES),
    errno_mod.ENOENT: (
        "/dev/userfaultfd does not exist (kernel older than 6.1, or no CONFIG_USERFAULTFD): "
        "use the syscall"),
    errno_mod.ENOSYS: (
        "no userfaultfd syscall: the kernel lacks CONFIG_USERFAULTFD, or a seccomp filter blocks "
        "it (containers: Docker's default profile; systemd SystemCallFilter=). Run on the host or "
        "allow the syscall (e.g. docker run --security-opt seccomp=unconfined)"),
    errno_mod.EINVAL: "unknown open flags for this kernel (UFFD_USER_MODE_ONLY needs 5.11)",
}

_IOCTL_HINTS = {
    ("UFFDIO_API", errno_mod.EINVAL): (
        "api must be 0xAA and features a subset of what a features=0 handshake returns; "
        "UFFDIO_API may be called only once per fd"),
    ("UFFDIO_REGISTER", errno_mod.EINVAL): (
        "mode unsupported for this memory or kernel (no mode given, MINOR on anonymous memory, "
        "WP on shmem/hugetlb before 5.19), a feature the mode needs was not negotiated, or the "
        "range is not page-aligned"),
    ("UFFDIO_REGISTER", errno_mod.EBUSY): "the range is registered with another userfaultfd",
    ("UFFDIO_REGISTER", errno_mod.EPERM): (
        "registering WP or MINOR on this VMA is not allowed (e.g. a read-only file mapping)"),
    ("UFFDIO_WRITEPROTECT", errno_mod.ENOENT): (
        "the range is not registered in WP mode with this userfaultfd"),
    ("UFFDIO_WRITEPROTECT", errno_mod.EINVAL): "the range is not page-aligned or has zero length",
    ("UFFDIO_COPY", errno_mod.EEXIST): "the destination page is already populated",
    ("UFFDIO_ZEROPAGE", errno_mod.EEXIST): "the destination page is already populated",
    ("UFFDIO_CONTINUE", errno_mod.EEXIST): "the page is already mapped",
    ("UFFDIO_CONTINUE", errno_mod.EFAULT): "no page cache page to map: populate it through "
                                           "another mapping of the file first",
    ("UFFDIO_MOVE", errno_mod.EBUSY): "the source page is shared or pinned; MOVE needs "
                                      "exclusive anonymous pages",
    ("PAGEMAP_SCAN", errno_mod.ENOTTY): "this kernel has no PAGEMAP_SCAN (needs 6.7)",
}

_GENERIC_HINTS = {
    errno_mod.EAGAIN: "the mm changed (fork/mremap/munmap events pending): read events, retry",
    errno_mod.ESRCH: "the process that owns the memory has exited",
    errno_mod.ENOTTY: "this kernel does not know this ioctl",
    errno_mod.ENOSPC: "the target mm is gone",
}

_CLASSES = {
    errno_mod.EPERM: UffdPermissionError,
    errno_mod.EACCES: UffdPermissionError,
    errno_mod.ENOSYS: UffdNotSupportedError,
    errno_mod.ENOTTY: UffdNotSupportedError,
    errno_mod.EEXIST: UffdExistsError,
    errno_mod.EAGAIN: UffdAgainError,
}


def error_for(err: int, operation: str, detail: str = "") -> UffdError:
    """Build the exception for a failed *operation* (an ioctl name or ``open(...)``)."""
    if operation.startswith("open"):
        hint = _OPEN_HINTS.get(err, "")
    else:
        hint = _IOCTL_HINTS.get((operation, err)) or _GENERIC_HINTS.get(err, "")
    return _CLASSES.get(err, UffdError)(err, operation, hint, detail)


def check(result: int, operation: str, detail: str = "") -> int:
    """Raise for a native call's -errno result; return it unchanged otherwise."""
    if result < 0:
        raise error_for(-result, operation, detail)
    return result
