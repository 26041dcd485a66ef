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


def test_one_root_for_every_error_uffdwp_names(tmp_path):
    import uffdwp
    from uffdwp.errors import MemoryUnavailableError, UffdError
    from uffdwp.snapshot import ImageError, SnapshotError, TargetError, parse_target, verify

    for cls in (UffdError, MemoryUnavailableError, SnapshotError, TargetError, ImageError):
        assert issubclass(cls, uffdwp.Error), cls
    # the older bases stay, so existing handlers still catch them
    assert issubclass(UffdError, OSError) and issubclass(MemoryUnavailableError, RuntimeError)
    exc = error_for(errno.EINVAL, "UFFDIO_REGISTER")
    assert isinstance(exc, uffdwp.Error) and exc.errno == errno.EINVAL
    assert exc.operation == "UFFDIO_REGISTER" and exc.hint
    bad = tmp_path / "bad.img"
    bad.write_bytes(b"not an image")
    for fail in (lambda: verify(bad), lambda: parse_target("nowhere:x")):
        try:
            fail()
        except uffdwp.Error:
            pass
        else:
            raise AssertionError("no uffdwp.Error raised")
