# SPDX-License-Identifier: GPL-2.0-only
"""Kernel module files without kmod: decompress, read .modinfo, resolve dependencies.

Debian's kernel packages ship no modules.dep (depmod runs at install time), and we unpack them
with dpkg -x, so dependencies are read from each module's own .modinfo ELF section.
"""

from __future__ import annotations

import lzma
import shutil
import struct
import subprocess
from pathlib import Path

SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def canon(name: str) -> str:
    """Module names treat '-' and '_' alike (crc32c-intel == crc32c_intel)."""
    return name.replace("-", "_")


def index_modules(modules_dir: Path) -> dict[str, Path]:
    """Map canonical module name -> file, for every module under <modules_dir>/kernel."""
    out: dict[str, Path] = {}
    for f in (modules_dir / "kernel").rglob("*.ko*"):
        for suf in SUFFIXES:
            if f.name.endswith(suf):
                out.setdefault(canon(f.name[: -len(suf)]), f)
                break
    return out


def read_module(path: Path) -> bytes:
    """The uncompressed ELF bytes of a module file."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        import gzip

        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        # no zstd in the standard library before 3.14: use the zstd tool
        if not shutil.which("zstd"):
            raise RuntimeError(f"{path}: zstd needed to decompress")
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    return data


def modinfo(elf: bytes) -> dict[str, list[str]]:
    """Key -> values from an ELF64 little-endian module's .modinfo section."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not an ELF64 little-endian module")
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _typ, _flags, _addr, off, size = struct.unpack_from(
            "<IIQQQQ", elf, shoff + i * shentsize)
        return name, off, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name_off, off, size = section(i)
        end = elf.index(b"\0", stroff + name_off)
        if elf[stroff + name_off:end] == b".modinfo":
            info: dict[str, list[str]] = {}
            for entry in elf[off:off + size].split(b"\0"):
                if b"=" in entry:
                    k, _, v = entry.decode("utf-8", "replace").partition("=")
                    info.setdefault(k, []).append(v)
            return info
    return {}


def resolve(index: dict[str, Path],
            wanted: list[str]) -> tuple[list[str], list[str], dict[str, bytes]]:
    """Dependency closure of wanted modules, in load order (dependencies first).

    Returns (load order, wanted names with no module file, i.e. built in, uncompressed ELFs).
    Soft 'pre:' dependencies are followed when their module exists (ext4 wants crc32c)."""
    order: list[str] = []
    builtin: list[str] = []
    blobs: dict[str, bytes] = {}
    visiting: set[str] = set()

    def visit(name: str, required: bool) -> None:
        name = canon(name)
        if name in blobs or name in visiting:
            return
        if name not in index:
            if required:
                builtin.append(name)
            return
        visiting.add(name)
        elf = read_module(index[name])
        info = modinfo(elf)
        for deps in info.get("depends", []):
            for d in filter(None, deps.split(",")):
                visit(d, True)
        for soft in info.get("softdep", []):
            # "pre: a b post: c": only pre-dependencies matter for loading
            words = soft.split()
            if "pre:" in words:
                for w in words[words.index("pre:") + 1:]:
                    if w.endswith(":"):
                        break
                    visit(w, False)
        visiting.discard(name)
        blobs[name] = elf
        order.append(name)

    for w in wanted:
        visit(w, True)
    return order, builtin, blobs
