# SPDX-License-Identifier: GPL-2.0-only
"""Where an image goes, named as QEMU names migration targets: file:PATH, exec:CMD, fd:N.

A target hands the engine a descriptor, then either commits (the image is complete) or discards
(the snapshot failed). A partial image never passes for a complete one: a file target writes a
partial file of its own beside PATH and renames it over PATH only on success, after fsync (and
removes it on failure), so PATH always holds a whole image (two snapshots to one path: the last
to commit wins, and each one's image is whole); an exec command or an fd receives a stream
without an end record, which `uffdwp image verify` rejects.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import stat
import subprocess
import time
from abc import ABC, abstractmethod

from ..errors import Error


class TargetError(Error):
    """The target could not be opened, or did not accept the whole image."""


class Target(ABC):
    spec: str
    nonblock: bool = False  # the engine waits in poll(), so an abort interrupts a stuck reader

    @abstractmethod
    def open(self) -> int:
        """Start receiving; returns the descriptor the engine writes to."""

    @abstractmethod
    def commit(self, deadline: float | None = None) -> None:
        """The image is complete: make it visible, by *deadline* (time.monotonic()) if given.
        Raises TargetError if the target failed or did not finish in time."""

    @abstractmethod
    def discard(self) -> str:
        """The snapshot failed: drop what was written; returns what happened to it."""

    def __str__(self) -> str:
        return self.spec


class FileTarget(Target):
    def __init__(self, path: str) -> None:
        if not path:
            raise TargetError("file: needs a path, e.g. file:/tmp/snap.img")
        self.spec = f"file:{path}"
        self.path = path
        self.fd = -1
        # Devices (/dev/null, /dev/full) and fifos are written in place; files go via a partial
        # file of this snapshot's own, created exclusively: two snapshots to one path never
        # write into each other's.
        try:
            mode = os.stat(path).st_mode
            self.in_place = not stat.S_ISREG(mode)
        except FileNotFoundError:
            self.in_place = False
        except OSError as exc:
            raise TargetError(f"cannot use {path}: {exc.strerror}") from exc
        self.partial = path if self.in_place else ""

    def open(self) -> int:
        if self.in_place:
            try:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise TargetError(f"cannot open {self.path}: {exc.strerror}") from exc
            return self.fd
        for _ in range(100):
            candidate = f"{self.path}.partial-{os.getpid()}-{secrets.token_hex(4)}"
            try:
                self.fd = os.open(candidate, os.O_WRONLY | os.O_CLOEXEC | os.O_CREAT | os.O_EXCL,
                                  0o644)
            except FileExistsError:
                continue
            except OSError as exc:
                raise TargetError(f"cannot create {candidate}: {exc.strerror}: check the "
                                  "directory exists and is writable") from exc
            self.partial = candidate
            return self.fd
        raise TargetError(f"cannot create a partial file beside {self.path}")

    def commit(self, deadline: float | None = None) -> None:
        if self.in_place:
            self._close()
            return
        try:
            # Durable before visible: after a crash PATH holds either the old file or this
            # whole image, never a torn one.
            os.fsync(self.fd)
            self._close()
            os.replace(self.partial, self.path)
        except OSError as exc:
            self.discard()
            raise TargetError(f"cannot commit the image to {self.path}: {exc.strerror}") from exc
        with contextlib.suppress(OSError):
            dirfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)

    def discard(self) -> str:
        self._close()
        if self.in_place:
            return f"{self.path} received a partial image (it has no end record)"
        if not self.partial:
            return f"nothing was written to {self.path}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.partial)
        return f"the partial image {self.partial} was removed"

    def _close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)


class ExecTarget(Target):
    """A shell command reading the image on its standard input (exec:'gzip > snap.gz')."""

    nonblock = True

    def __init__(self, command: str, wait_timeout: float = 60.0) -> None:
        if not command.strip():
            raise TargetError("exec: needs a command, e.g. exec:'gzip > snap.gz'")
        self.spec = f"exec:{command}"
        self.command = command
        self.wait_timeout = wait_timeout
        self.proc: subprocess.Popen | None = None
        self.fd = -1

    def open(self) -> int:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            # Its own session: an abort kills the command and everything it started (a
            # `sleep` left behind would hold our stdout open, or keep writing).
            self.proc = subprocess.Popen(["/bin/sh", "-c", self.command], stdin=read_end,
                                         close_fds=True, restore_signals=True,
                                         start_new_session=True)
        except OSError as exc:
            os.close(write_end)
            raise TargetError(f"cannot run {self.command!r}: {exc.strerror}") from exc
        finally:
            os.close(read_end)
        os.set_blocking(write_end, False)
        self.fd = write_end
        return write_end

    def commit(self, deadline: float | None = None) -> None:
        self._close()
        wait = self.wait_timeout
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - time.monotonic()))
        status = self._wait(wait)
        if status is None:
            self.discard()
            raise TargetError(f"exec command {self.command!r} did not exit within "
                              f"{wait:.1f}s after the image ended (it was killed)")
        if status != 0:
            raise TargetError(f"exec command {self.command!r} {_describe(status)}: "
                              "it may not have stored the whole image")

    def discard(self) -> str:
        self._close()
        status = self._wait(0.5)
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its children too
            if status is None:
                status = self._wait(5.0)
        return (f"exec command {self.command!r} {_describe(status)} after a partial image "
                "(no end record: it will not verify)")

    def exit_status(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def _wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return 0
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)


class FdTarget(Target):
    """An inherited descriptor: written as is, never closed (the caller owns it)."""

    def __init__(self, fd: int) -> None:
        self.spec = f"fd:{fd}"
        self.fd = fd

    def open(self) -> int:
        try:
            self.was_blocking = os.get_blocking(self.fd)
            mode = os.fstat(self.fd).st_mode
        except OSError as exc:
            raise TargetError(f"fd:{self.fd} is not an open descriptor: {exc.strerror}") from exc
        # A pipe or socket whose reader stops would block write(2) for ever, and no abort could
        # end it: write to those without blocking (and wait in poll()) for the snapshot.
        if self.was_blocking and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            os.set_blocking(self.fd, False)
        self.nonblock = not os.get_blocking(self.fd)
        return self.fd

    def commit(self, deadline: float | None = None) -> None:
        self._restore()

    def discard(self) -> str:
        self._restore()
        return f"fd {self.fd} received a partial image (no end record: it will not verify)"

    def _restore(self) -> None:
        with contextlib.suppress(OSError):
            os.set_blocking(self.fd, self.was_blocking)


def _describe(status: int | None) -> str:
    if status is None:
        return "did not exit and was killed"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return "exited with status 0" if status == 0 else f"exited with status {status}"


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
SCHEMES = ("file", "exec", "fd")


def parse_target(spec: str | Target) -> Target:
    """file:PATH, exec:CMD or fd:N; a bare path (no scheme) means file:PATH."""
    if isinstance(spec, Target):
        return spec
    if not isinstance(spec, str) or not spec:
        raise TargetError("no target: use file:PATH, exec:CMD or fd:N")
    match = _SCHEME.match(spec)
    if not match:
        return FileTarget(spec)
    kind, rest = match.group(1), spec[match.end():]
    if kind not in SCHEMES:
        raise TargetError(f"unknown target scheme {kind!r} in {spec!r}: use file:PATH, "
                          "exec:CMD or fd:N (for a file whose name has a colon: file:NAME)")
    if kind == "file":
        return FileTarget(rest)
    if kind == "exec":
        return ExecTarget(rest)
    try:
        fd = int(rest)
    except ValueError:
        raise TargetError(f"fd target needs a number: fd:N, not {spec!r}") from None
    if fd < 0:
        raise TargetError(f"fd target needs a descriptor number >= 0, not {fd}")
    return FdTarget(fd)


__all__ = ["SCHEMES", "ExecTarget", "FdTarget", "FileTarget", "Target", "TargetError",
           "parse_target"]
