# SPDX-License-Identifier: GPL-2.0-only
"""The guest program: writer.S assembled into a boot sector, and the layout it writes.

GNU as and ld (binutils, which gcc pulls in) assemble it at test time: nothing binary is kept
in the tree. The layout constants are passed to the assembler, so this module and writer.S
cannot disagree about where things are.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("writer.S")
PAGE = 4096
START = 0x100000  # the pattern starts at 1 MiB, above the BIOS and the boot sector
STATUS = 0x5000  # status page: below the boot sector at 0x7c00
MAGIC = 0x50574655  # "UFWP"
HIST_OFFSET = 0x100
HIST_BUCKETS = 65  # bucket 64: a stall of 2^63 ticks or more (never)
TAIL_OFFSET = PAGE - 4
PIT_HZ = 1_193_182  # the 8254's input clock
PIT_LATCH = 59_659  # 50 ms of it (fits the 16-bit counter)


class BuildError(RuntimeError):
    """The boot sector could not be assembled (binutils missing or failing)."""


def end_address(ram_bytes: int) -> int:
    """The pattern covers RAM from 1 MiB to its end (the pc machine maps it all below 4 GiB)."""
    if ram_bytes <= START + PAGE or ram_bytes % PAGE:
        raise ValueError(f"guest RAM {ram_bytes} is not a page multiple above 1 MiB")
    return ram_bytes


def stride_pages(pages: int) -> int:
    """The writer's step, in pages: about 0.618 of the pattern (golden ratio: consecutive writes
    land far apart) and coprime with its page count (a pass visits every page once)."""
    step = max(1, round(pages * 0.618))
    while math.gcd(step, pages) != 1:
        step += 1
    return step


def writer_order(pages: int) -> list[int]:
    """Page indexes in the order the writer visits them within a pass."""
    step = stride_pages(pages)
    return [k * step % pages for k in range(pages)]


def missing_tools() -> list[str]:
    return [t for t in ("as", "ld") if shutil.which(t) is None]


def build(ram_bytes: int, cache_dir: Path) -> Path:
    """The boot sector for a guest of *ram_bytes* RAM (built once per source and size)."""
    end = end_address(ram_bytes)
    size = end - START
    defs = {"START": START, "END": end, "SIZE": size,
            "STRIDE": stride_pages(size // PAGE) * PAGE, "PIT_LATCH": PIT_LATCH,
            "STATUS": STATUS, "MAGIC": MAGIC}
    src = SOURCE.read_bytes()
    key = hashlib.sha256(src + repr(sorted(defs.items())).encode()).hexdigest()[:12]
    out = Path(cache_dir) / f"writer-{ram_bytes >> 20}M-{key}.img"
    if out.exists():
        return out
    if missing_tools():
        raise BuildError(f"{' and '.join(missing_tools())} not found (apt install binutils)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="uffdwp-bootblock-") as td:
        obj, img = Path(td) / "writer.o", Path(td) / "writer.img"
        asm = ["as", "--32", *(f"--defsym={k}={v:#x}" for k, v in defs.items()),
               "-o", str(obj), str(SOURCE)]
        link = ["ld", "-m", "elf_i386", "-Ttext=0x7c00", "--oformat=binary", "-o", str(img),
                str(obj)]
        for cmd in (asm, link):
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode:
                raise BuildError(f"{cmd[0]} failed: {p.stderr.strip()}")
        data = img.read_bytes()
        if len(data) != 512 or data[510:] != b"\x55\xaa":
            raise BuildError(f"{SOURCE.name} did not assemble into a 512-byte boot sector "
                             f"({len(data)} bytes)")
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(out)
    return out


@dataclass(frozen=True)
class Status:
    """The writer's status page."""

    magic: int
    passes: int  # passes completed
    last_tsc: int  # rdtsc after the latest page's stores
    start: int
    end: int
    stride: int  # bytes from one page written to the next (modulo end - start)
    pit_ticks: int  # rdtsc ticks in pit_latch periods of the 8254, measured at boot
    pit_latch: int
    histogram: tuple[int, ...]  # page-store stalls, log2 buckets of rdtsc ticks

    @property
    def ticks_per_us(self) -> float:
        """The guest's rdtsc rate, from its calibration against the 8254 (0.0 if none)."""
        if not self.pit_latch:
            return 0.0
        return self.pit_ticks / (self.pit_latch / PIT_HZ * 1e6)

    @property
    def running(self) -> bool:
        return self.magic == MAGIC

    @classmethod
    def parse(cls, page: bytes) -> Status:
        magic, passes, last_tsc, start, end, stride = struct.unpack_from("<IIQIII", page, 0)
        pit_ticks, pit_latch = struct.unpack_from("<II", page, 0x20)
        hist = struct.unpack_from(f"<{HIST_BUCKETS}I", page, HIST_OFFSET)
        return cls(magic, passes, last_tsc, start, end, stride, pit_ticks, pit_latch, hist)


def histogram_delta(before: Status, after: Status) -> list[int]:
    """Stores counted between two readings of the status page (u32 counters may wrap)."""
    return [(b - a) & 0xFFFFFFFF for a, b in zip(before.histogram, after.histogram)]
