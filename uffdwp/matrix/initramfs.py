# SPDX-License-Identifier: GPL-2.0-only
"""Build a guest initramfs: busybox, the kernel's own modules (uncompressed), and vms/guest/init.

The archive is written in the kernel's "newc" cpio format by Python itself, so no cpio tool and
no root privileges (device nodes are just header entries) are needed. Modules are decompressed
here because busybox's insmod does not read .ko.xz on every build.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import stat
from pathlib import Path

from . import CACHE_DIR, VMS_DIR
from .debfetch import KernelFiles
from .kmod import index_modules, resolve

GUEST_INIT = VMS_DIR / "guest" / "init"
# What the guest needs: virtio PCI transport, 9p for the host root and the output share, overlay
# for a writable root, virtio-blk + ext4 for a scratch disk (swap files), virtio-rng so early
# getrandom() does not stall under TCG. Missing module files are taken to be built in.
WANTED_MODULES = [
    "virtio_pci", "virtio_blk", "9pnet_virtio", "9p", "overlay", "ext4",
    "crc32c_generic", "crc32c-intel", "virtio_rng",
    "virtio_console",  # a module on 5.10 and 6.1: the Vagrant box's guest agent needs its channel
    "virtio_net",  # Vagrant machines reach SSH through a user-mode virtio NIC
]
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


class CpioWriter:
    """Minimal writer for the newc ("070701") cpio format the kernel unpacks."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"",
               rdev: tuple[int, int] = (0, 0)) -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.ino += 1
        hdr = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
        self.buf.write(hdr + name.encode() + b"\0")
        self._pad()
        self.buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def find_busybox() -> Path:
    for c in BUSYBOX_CANDIDATES:
        p = Path(c)
        # the guest has no libc of its own in the initramfs: busybox must be static
        if p.is_file() and b"/lib64/ld-linux" not in p.read_bytes()[:8192]:
            return p
    w = shutil.which("busybox")
    if w:
        return Path(w)
    raise FileNotFoundError("static busybox not found: run ci/install-matrix-deps.sh")


def build_initramfs(kernel: KernelFiles, cache_dir: Path = CACHE_DIR,
                    init_script: Path = GUEST_INIT) -> Path:
    """Build (or reuse) the initramfs for a kernel; returns its path."""
    busybox = find_busybox()
    init = init_script.read_bytes()
    bb = busybox.read_bytes()
    key = hashlib.sha256(init + bb + kernel.release.encode() + str(kernel.modules).encode()
                         + f"{kernel.vmlinuz}@{kernel.vmlinuz.stat().st_mtime_ns}".encode()
                         + " ".join(WANTED_MODULES).encode()).hexdigest()[:16]
    out = cache_dir / "initramfs" / f"{kernel.release}-{key}.cpio.gz"
    if out.exists():
        return out
    # a kernel without modules (everything built in, as vms/uffdwp.config builds it) needs none
    index = index_modules(kernel.modules) if kernel.modules is not None else {}
    order, builtin, blobs = resolve(index, WANTED_MODULES)
    w = CpioWriter()
    for d in ("bin", "dev", "proc", "sys", "tmp", "mnt", "modules", "newroot"):
        w.dir(d)
    # the kernel opens /dev/console before devtmpfs is mounted: without it init has no stdout
    w.chardev("dev/console", 5, 1)
    w.chardev("dev/null", 1, 3, 0o666)
    w.file("bin/busybox", bb, 0o755)
    w.symlink("bin/sh", "busybox")
    w.file("init", init, 0o755)
    for i, name in enumerate(order):
        w.file(f"modules/{i:02d}-{name}.ko", blobs[name])
    w.file("modules/BUILTIN", ("\n".join(builtin) + "\n").encode())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    # level 1: the guest unpacks it under TCG, where a smaller archive saves little
    tmp.write_bytes(gzip.compress(w.finish(), compresslevel=1))
    tmp.rename(out)
    return out
