# SPDX-License-Identifier: GPL-2.0-only
"""Parsing of uffd_msg (pure logic: the layout is fixed by the uapi)."""

from __future__ import annotations

import struct

import pytest

from uffdwp import messages as m
from uffdwp.kernel_facts import FaultFlag


def raw(event: int, a: int = 0, b: int = 0, c: int = 0) -> bytes:
    return struct.pack("=BBHIQQQ", event, 0, 0, 0, a, b, c)


def test_pagefault():
    msg = m.parse(raw(m.EVENT_PAGEFAULT, FaultFlag.WRITE | FaultFlag.WP, 0x7F0000001000, 1234))
    assert msg == m.PageFault(0x7F0000001000, FaultFlag.WRITE | FaultFlag.WP, 1234)
    assert msg.is_wp and msg.is_write and not msg.is_minor


def test_fork_event_owns_its_descriptor():
    import os

    r, w = os.pipe()  # stands for the fd the kernel installs for the child's mm
    os.close(w)
    ev = m.parse(raw(m.EVENT_FORK, r))
    assert isinstance(ev, m.ForkEvent) and ev.uffd.fileno() == r
    with ev.uffd:
        pass
    assert ev.uffd.closed
    with pytest.raises(OSError):
        os.fstat(r)


def test_events():
    assert m.parse(raw(m.EVENT_REMAP, 1, 2, 3)) == m.RemapEvent(1, 2, 3)
    assert m.parse(raw(m.EVENT_REMOVE, 10, 20)) == m.RemoveEvent(10, 20)
    assert m.parse(raw(m.EVENT_UNMAP, 10, 20)) == m.UnmapEvent(10, 20)
    assert isinstance(m.parse(raw(0x99)), m.UnknownEvent)


def test_many_and_bad_length():
    assert len(m.parse_many(raw(m.EVENT_REMOVE, 1, 2) + raw(m.EVENT_UNMAP, 3, 4))) == 2
    with pytest.raises(ValueError):
        m.parse(b"\0" * 31)
