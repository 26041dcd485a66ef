# SPDX-License-Identifier: GPL-2.0-only
"""One QEMU (TCG) running the writer boot sector, driven over QMP (the qemu.qmp library).

The source and the restored guest are started from the same command line (migration needs the
same machine on both ends); the restored one adds `-incoming defer -S`, so it stays paused once
the image is loaded and its RAM can be read as it came out of the image.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from qemu.qmp import ConnectError, ExecuteError
from qemu.qmp.legacy import QEMUMonitorProtocol

from .bootblock import MAGIC, PAGE, START, STATUS, Status

QEMU = "qemu-system-x86_64"
MIB = 1 << 20
# The guest's RAM as QEMU backs it: "anon" is QEMU's default (private anonymous memory), "shmem"
# a shared memfd, the backend whose write-protection needs WP_HUGETLBFS_SHMEM (5.19).
MEMORY_BACKENDS = ("anon", "shmem")
DONE_STATES = ("completed", "failed", "cancelled")


class GuestError(RuntimeError):
    """QEMU did not start, died, or the guest did not do what it should."""


def qemu_missing() -> str | None:
    """Why the QEMU tests cannot run here, or None."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (apt install qemu-system-x86)"
    return None


def qemu_version() -> tuple[int, int, int]:
    out = subprocess.run([QEMU, "--version"], capture_output=True, text=True,
                         check=True).stdout
    ver = out.split("version", 1)[1].split()[0]
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in ver.split(".")[:3]]
    return (parts[0], parts[1] if len(parts) > 1 else 0, parts[2] if len(parts) > 2 else 0)


@dataclass(frozen=True)
class GuestConfig:
    boot_image: Path
    ram_mib: int = 32
    memory: str = "anon"

    def memory_args(self) -> list[str]:
        if self.memory == "anon":
            return ["-m", f"{self.ram_mib}M"]
        if self.memory == "shmem":
            # id pc.ram: the RAM block keeps the name it has without a backend
            return ["-m", f"{self.ram_mib}M", "-object",
                    f"memory-backend-memfd,id=pc.ram,size={self.ram_mib}M,share=on",
                    "-machine", "memory-backend=pc.ram"]
        raise ValueError(f"unknown memory backend {self.memory!r}; one of {MEMORY_BACKENDS}")


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the process that started QEMU dies, so a test
    killed from outside (pytest-timeout, a crashed worker) leaves no guest behind."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


class Guest:
    """A QEMU process (own process group) and its QMP connection."""

    def __init__(self, config: GuestConfig, workdir: Path, name: str,
                 incoming: bool = False, timeout: float = 60.0) -> None:
        self.config = config
        self.timeout = timeout  # for QEMU to come up, and for each QMP command
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.sock = self.dir / "qmp.sock"
        self.console = self.dir / "console.log"
        disk = self.dir / "boot.img"  # each QEMU its own copy: IDE disks are opened read-write
        shutil.copyfile(config.boot_image, disk)
        self.argv = [
            QEMU, "-nodefaults", "-no-user-config", "-display", "none",
            "-machine", "pc", "-accel", "tcg,thread=multi", "-smp", "1",
            *config.memory_args(),
            "-drive", f"file={disk},format=raw,if=ide",
            "-serial", f"file:{self.console}",
            "-qmp", f"unix:{self.sock},server=on,wait=off",
        ]
        # -S: the vCPU waits for `cont` (a tracer can attach to an idle QEMU first); the
        # restored guest stays paused once its image is loaded
        self.argv += ["-S"]
        if incoming:
            self.argv += ["-incoming", "defer"]
        self.proc: subprocess.Popen | None = None
        self.qmp: QEMUMonitorProtocol | None = None
        self._dumps = 0

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> Guest:
        """Start QEMU and connect; on any failure nothing is left running."""
        timeout = self.timeout
        self.sock.unlink(missing_ok=True)
        with open(self.dir / "qemu.stderr", "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        try:
            deadline = time.monotonic() + timeout
            while self.qmp is None:
                self._check_alive()
                if time.monotonic() > deadline:
                    raise GuestError(f"{self.name}: no QMP after {timeout:.0f} s")
                if self.sock.exists():  # bound, but maybe not listening yet
                    qmp = QEMUMonitorProtocol(str(self.sock))
                    try:
                        qmp.connect()
                    except ConnectError:
                        qmp.close()
                    else:
                        self.qmp = qmp
                        break
                time.sleep(0.05)
            self.qmp.settimeout(timeout)
        except BaseException:
            self.close()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stderr(self) -> str:
        try:
            return (self.dir / "qemu.stderr").read_text(errors="replace").strip()
        except OSError:
            return ""

    def _check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise GuestError(f"{self.name}: QEMU exited ({code}): {self.stderr()[-400:]}")

    def close(self) -> None:
        """Quit QEMU; whatever does not go in 5 s is killed with its process group."""
        if self.qmp is not None:
            try:
                if self.proc is not None and self.proc.poll() is None:
                    self.qmp.cmd("quit")
            except Exception:
                pass
            try:
                self.qmp.close()
            except Exception:
                pass
            self.qmp = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5 if self.proc.poll() is None else 0)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)

    def __enter__(self) -> Guest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- QMP --------------------------------------------------------------------------------
    def cmd(self, name: str, **args: object) -> object:
        self._check_alive()
        assert self.qmp is not None
        return self.qmp.cmd(name, **args)

    def run_state(self) -> str:
        return str(self.cmd("query-status")["status"])  # type: ignore[index]

    def read(self, address: int, length: int) -> bytes:
        """Guest-physical memory, through QMP pmemsave (the guest may be running)."""
        self._dumps += 1
        path = self.dir / f"dump-{self._dumps}.bin"
        self.cmd("pmemsave", val=address, size=length, filename=str(path))
        try:
            return path.read_bytes()
        finally:
            path.unlink(missing_ok=True)

    def read_host(self, address: int, length: int, chunk: int = 64 << 10) -> bytes:
        """Guest-physical memory read from QEMU's own RAM mapping through /proc/PID/mem, in
        chunks: QEMU is not involved (no lock of its own), the guest runs meanwhile."""
        base = self._ram_mapping()
        out = bytearray()
        with open(f"/proc/{self.pid}/mem", "rb", buffering=0) as mem:
            for off in range(address, address + length, chunk):
                mem.seek(base + off)
                out += mem.read(min(chunk, address + length - off))
        return bytes(out)

    def _ram_mapping(self) -> int:
        """Host address of guest-physical 0: the writable mapping of at least the guest's RAM
        whose status page holds the writer's magic and whose first pattern page its tag."""
        ram = self.config.ram_mib * MIB
        with open(f"/proc/{self.pid}/maps") as f:
            maps = [line.split() for line in f]
        with open(f"/proc/{self.pid}/mem", "rb", buffering=0) as mem:
            for fields in maps:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                if hi - lo < ram or not fields[1].startswith("rw"):
                    continue
                for base in range(lo, hi - ram + 1, 2 * MIB):  # QEMU aligns RAM to 2 MiB
                    try:
                        mem.seek(base + STATUS)
                        magic = struct.unpack("<I", mem.read(4))[0]
                        mem.seek(base + START + 4)
                        tag = struct.unpack("<I", mem.read(4))[0]
                    except (OSError, struct.error):
                        break
                    if magic == MAGIC and tag == START:
                        return base
        raise GuestError(f"{self.name}: guest RAM not found in QEMU's mappings")

    def status(self) -> Status:
        return Status.parse(self.read(STATUS, PAGE))

    def ram(self, via: str = "pmemsave") -> bytes:
        """The writer's whole pattern range, [1 MiB, end of RAM), through QMP pmemsave or
        (via="proc") QEMU's /proc/PID/mem."""
        read = self.read_host if via == "proc" else self.read
        return read(START, self.config.ram_mib * MIB - START)

    def wait_writer(self, passes: int, timeout: float) -> Status:
        """Until the writer has completed *passes* passes over its pages."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if st.running and st.passes >= passes:
                return st
            if time.monotonic() > deadline:
                raise GuestError(f"{self.name}: writer at {st.passes} passes (magic "
                                 f"{st.magic:#x}) after {timeout:.0f} s, wanted {passes}")
            time.sleep(0.05)

    def migrate(self, uri: str, timeout: float, poll: float = 0.02) -> dict:
        """Start an outgoing migration and wait for its end; returns the last query-migrate."""
        self.cmd("migrate", uri=uri)
        return self.wait_migration(timeout, poll)

    def wait_migration(self, timeout: float, poll: float = 0.02) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            info = self.cmd("query-migrate")
            assert isinstance(info, dict)
            if info.get("status") in DONE_STATES:
                return info
            if time.monotonic() > deadline:
                try:
                    self.cmd("migrate_cancel")
                except ExecuteError:
                    pass
                raise GuestError(f"{self.name}: migration still {info.get('status')} after "
                                 f"{timeout:.0f} s")
            time.sleep(poll)

    def incoming(self, uri: str, timeout: float) -> str:
        """Load an image into this (-incoming defer) guest; returns the run state after it."""
        self.cmd("migrate-incoming", uri=uri)
        deadline = time.monotonic() + timeout
        while True:
            state = self.run_state()
            if state != "inmigrate":
                return state
            if time.monotonic() > deadline:
                raise GuestError(f"{self.name}: still loading the image after {timeout:.0f} s")
            time.sleep(0.05)


def set_capability(guest: Guest, name: str, state: bool = True) -> None:
    guest.cmd("migrate-set-capabilities",
              capabilities=[{"capability": name, "state": state}])


__all__ = ["MEMORY_BACKENDS", "ExecuteError", "Guest", "GuestConfig", "GuestError",
           "qemu_missing", "qemu_version", "set_capability"]
