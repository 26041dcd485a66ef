# SPDX-License-Identifier: GPL-2.0-only
"""Background snapshots of this process's memory with UFFD-WP, their image format and targets.

    from uffdwp import memory
    from uffdwp.snapshot import take, load

    region = memory.allocate("anon", 64 << 20)
    result = take([region], "file:/tmp/snap.img")
    image = load("/tmp/snap.img")          # image.contents[0] == region as it was at the freeze
"""

from .engine import Progress, Snapshot, SnapshotError, SnapshotResult, SnapshotStats, take
from .image import (
    ImageError,
    ImageHeader,
    ImageWriter,
    LoadedImage,
    RegionInfo,
    VerifyResult,
    load,
    restore,
    verify,
)
from .targets import ExecTarget, FdTarget, FileTarget, Target, TargetError, parse_target

__all__ = [
    "ExecTarget", "FdTarget", "FileTarget", "ImageError", "ImageHeader", "ImageWriter",
    "LoadedImage", "Progress", "RegionInfo", "Snapshot", "SnapshotError", "SnapshotResult",
    "SnapshotStats", "Target", "TargetError", "VerifyResult", "load", "parse_target", "restore",
    "take", "verify",
]
