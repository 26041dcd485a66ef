# SPDX-License-Identifier: GPL-2.0-only
"""Typed uffd_msg: page faults and the non-cooperative events."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .kernel_facts import MODES, FaultFlag

if TYPE_CHECKING:
    from .uffd import Userfaultfd

MSG_SIZE = 32  # sizeof(struct uffd_msg), fixed by the uapi
EVENT_PAGEFAULT = MODES["UFFD_EVENT_PAGEFAULT"]
EVENT_FORK = MODES["UFFD_EVENT_FORK"]
EVENT_REMAP = MODES["UFFD_EVENT_REMAP"]
EVENT_REMOVE = MODES["UFFD_EVENT_REMOVE"]
EVENT_UNMAP = MODES["UFFD_EVENT_UNMAP"]

_HEADER = struct.Struct("=BBHI")  # event, reserved1, reserved2, reserved3
_ARG = struct.Struct("=QQQ")  # the 24-byte union, read as three words


@dataclass(frozen=True)
class PageFault:
    """UFFD_EVENT_PAGEFAULT: *address* is page-aligned unless EXACT_ADDRESS was negotiated."""

    address: int
    flags: FaultFlag
    thread_id: int  # 0 unless THREAD_ID was negotiated

    @property
    def is_write(self) -> bool:
        return bool(self.flags & FaultFlag.WRITE)

    @property
    def is_wp(self) -> bool:
        return bool(self.flags & FaultFlag.WP)

    @property
    def is_minor(self) -> bool:
        return bool(self.flags & FaultFlag.MINOR)


@dataclass(frozen=True)
class ForkEvent:
    """UFFD_EVENT_FORK: *uffd* is the new userfaultfd (a descriptor the kernel installed in this
    process) for the child's mm. The event owns it: close it, or use it in a ``with`` block;
    it is closed when collected."""

    uffd: Userfaultfd


@dataclass(frozen=True)
class RemapEvent:
    old_address: int
    new_address: int
    length: int


@dataclass(frozen=True)
class RemoveEvent:
    """MADV_DONTNEED/MADV_REMOVE of a registered range: [start, end)."""

    start: int
    end: int


@dataclass(frozen=True)
class UnmapEvent:
    start: int
    end: int


@dataclass(frozen=True)
class UnknownEvent:
    event: int
    raw: bytes


Message = PageFault | ForkEvent | RemapEvent | RemoveEvent | UnmapEvent | UnknownEvent


def parse(raw: bytes) -> Message:
    """One 32-byte uffd_msg into its typed form. A fork event's descriptor is adopted: parse
    only what the kernel wrote."""
    if len(raw) != MSG_SIZE:
        raise ValueError(f"uffd_msg is {MSG_SIZE} bytes, got {len(raw)}")
    event = _HEADER.unpack_from(raw)[0]
    a, b, c = _ARG.unpack_from(raw, _HEADER.size)
    if event == EVENT_PAGEFAULT:
        return PageFault(address=b, flags=FaultFlag(a), thread_id=c & 0xFFFFFFFF)
    if event == EVENT_FORK:
        from .uffd import Userfaultfd  # uffd reads messages: imported here, not at the top

        return ForkEvent(uffd=Userfaultfd(a & 0xFFFFFFFF))
    if event == EVENT_REMAP:
        return RemapEvent(old_address=a, new_address=b, length=c)
    if event == EVENT_REMOVE:
        return RemoveEvent(start=a, end=b)
    if event == EVENT_UNMAP:
        return UnmapEvent(start=a, end=b)
    return UnknownEvent(event=event, raw=bytes(raw))


def parse_many(raw: bytes) -> list[Message]:
    return [parse(raw[i:i + MSG_SIZE]) for i in range(0, len(raw), MSG_SIZE)]
