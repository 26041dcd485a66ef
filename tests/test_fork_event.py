# SPDX-License-Identifier: GPL-2.0-only
"""A fork event read through Userfaultfd.read owns the child's userfaultfd (real kernel, in a
child process: the fork comes from C through ctypes, which lets the reader thread run)."""

from __future__ import annotations

import pytest

from uffdwp.kernel_facts import Feature
from uffdwp.uffd import supported_features

from .childproc import assert_ok, run_python

try:
    OFFERED = supported_features()
except OSError as _exc:
    OFFERED, WHY = Feature(0), f"no userfaultfd here: {_exc}"
else:
    WHY = "feature EVENT_FORK (mainline 4.11) absent on this kernel"

CHILD = """
import ctypes, os, threading
from uffdwp import Feature, ForkEvent, RegisterMode, Userfaultfd, memory

libc = ctypes.CDLL(None, use_errno=True)
region = memory.allocate("anon", pages=1)
uffd = Userfaultfd.create(Feature.PAGEFAULT_FLAG_WP | Feature.EVENT_FORK)
uffd.register(region.address, region.length, RegisterMode.WP)
got = []
reader = threading.Thread(target=lambda: got.extend(uffd.read(1, 10)))
reader.start()
pid = libc.fork()  # the kernel holds fork() until the event is read
if pid == 0:
    libc._exit(0)
reader.join()
os.waitpid(pid, 0)
ev = got[0]
assert isinstance(ev, ForkEvent), got
fd = ev.uffd.fileno()
assert fd != uffd.fileno()
print("link", os.readlink(f"/proc/self/fd/{fd}"))
with ev.uffd:
    pass
print("closed", ev.uffd.closed, os.path.exists(f"/proc/self/fd/{fd}"))
"""


@pytest.mark.skipif(not OFFERED & Feature.EVENT_FORK, reason=WHY)
def test_fork_event_hands_over_the_childs_userfaultfd_to_close():
    out = assert_ok(run_python(CHILD, timeout=30))
    assert "link anon_inode:[userfaultfd]" in out, out
    assert "closed True False" in out, out
