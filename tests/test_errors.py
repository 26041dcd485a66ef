# SPDX-License-Identifier: GPL-2.0-only
"""Errors carry errno, operation and an actionable hint."""

from __future__ import annotations

import errno

from uffdwp.errors import (
    UffdAgainError,
    UffdExistsError,
    UffdNotSupportedError,
    UffdPermissionError,
    error_for,
)


def test_open_eperm_names_the_ways_out():
    exc = error_for(errno.EPERM, "open(syscall)")
    assert isinstance(exc, UffdPermissionError) and isinstance(exc, PermissionError)
    for needle in ("vm.unprivileged_userfaultfd", "CAP_SYS_PTRACE", "user_mode_only"):
        assert needle in str(exc)


def test_enosys_mentions_seccomp():
    exc = error_for(errno.ENOSYS, "open(syscall)")
    assert isinstance(exc, UffdNotSupportedError)
    assert "seccomp" in str(exc) and "CONFIG_USERFAULTFD" in str(exc)


def test_ioctl_specific_and_generic_hints():
    assert "only once" in str(error_for(errno.EINVAL, "UFFDIO_API"))
    assert isinstance(error_for(errno.EEXIST, "UFFDIO_COPY"), UffdExistsError)
    again = error_for(errno.EAGAIN, "UFFDIO_COPY")
    assert isinstance(again, UffdAgainError) and "events" in str(again)
    assert error_for(errno.ENOENT, "UFFDIO_WRITEPROTECT").errno == errno.ENOENT
