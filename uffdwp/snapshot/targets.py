"""Where an image goes, named as QEMU names migration targets: file:PATH, exec:CMD, fd:N.

A target hands the engine a descriptor, then either commits (the image is complete) or discards
(the snapshot failed). A partial image never passes for a complete one: a file target writes
PATH.partial and renames it only on success (and removes it on failure); an exec command or an
fd receives a stream without an end record, which `uffdwp image verify` rejects.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
from abc import ABC, abstractmethod


class TargetError(Exception):
    """The target could not be opened, or did not accept the whole image."""


class Target(ABC):
    spec: str
    nonblock: bool = False  # the engine waits in poll(), so an abort interrupts a stuck reader

    @abstractmethod
    def open(self) -> int:
        """Start receiving; returns the descriptor the engine writes to."""

    @abstractmethod
    def commit(self) -> None:
        """The image is complete: make it visible. Raises TargetError if the target failed."""

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
        # Devices (/dev/null, /dev/full) and fifos are written in place; files go via .partial.
        try:
            mode = os.stat(path).st_mode
            self.in_place = not stat.S_ISREG(mode)
        except FileNotFoundError:
            self.in_place = False
        self.partial = path if self.in_place else path + ".partial"

    def open(self) -> int:
        flags = os.O_WRONLY | os.O_CLOEXEC | (0 if self.in_place else os.O_CREAT | os.O_TRUNC)
        try:
            self.fd = os.open(self.partial, flags, 0o644)
        except OSError as exc:
            raise TargetError(f"cannot create {self.partial}: {exc.strerror}: check the "
                              "directory exists and is writable") from exc
        return self.fd

    def commit(self) -> None:
        self._close()
        if not self.in_place:
            os.replace(self.partial, self.path)

    def discard(self) -> str:
        self._close()
        if self.in_place:
            return f"{self.path} received a partial image (it has no end record)"
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
            self.proc = subprocess.Popen(["/bin/sh", "-c", self.command], stdin=read_end,
                                         close_fds=True, restore_signals=True)
        except OSError as exc:
            os.close(write_end)
            raise TargetError(f"cannot run {self.command!r}: {exc.strerror}") from exc
        finally:
            os.close(read_end)
        os.set_blocking(write_end, False)
        self.fd = write_end
        return write_end

    def commit(self) -> None:
        self._close()
        status = self._wait(self.wait_timeout)
        if status is None:
            raise TargetError(f"exec command {self.command!r} did not exit within "
                              f"{self.wait_timeout:.0f}s after the image ended")
        if status != 0:
            raise TargetError(f"exec command {self.command!r} {_describe(status)}: "
                              "it may not have stored the whole image")

    def discard(self) -> str:
        self._close()
        status = self._wait(0.5)
        if status is None and self.proc is not None:
            self.proc.kill()
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

    def commit(self) -> None:
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


def parse_target(spec: str | Target) -> Target:
    """file:PATH, exec:CMD or fd:N (a bare path means file:PATH)."""
    if isinstance(spec, Target):
        return spec
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in ("file", "exec", "fd"):
        if "/" in spec or "." in spec:
            return FileTarget(spec)
        raise TargetError(f"unknown target {spec!r}: use file:PATH, exec:CMD or fd:N")
    if kind == "file":
        return FileTarget(rest)
    if kind == "exec":
        return ExecTarget(rest)
    try:
        return FdTarget(int(rest))
    except ValueError:
        raise TargetError(f"fd target needs a number: fd:N, not {spec!r}") from None


__all__ = ["ExecTarget", "FdTarget", "FileTarget", "Target", "TargetError", "parse_target"]
