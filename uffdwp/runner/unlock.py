# SPDX-License-Identifier: GPL-2.0-only
"""The last word of a run that could not open a userfaultfd (a non-root user, by default): what
to change on this machine, and how many of the skipped tests that would let run."""

from __future__ import annotations

import grp
import pwd

from ..probe import ProbeResult
from .skips import cause_of

# The start of the skip reason of every suite test that needs a userfaultfd and finds none
# (suites/conftest.py): the tests that access to one unlocks.
NO_UFFD = "no userfaultfd here"


def _owner(access: dict) -> str:
    dev = access["dev_userfaultfd"]
    try:
        user = pwd.getpwuid(dev["uid"]).pw_name
        group = grp.getgrgid(dev["gid"]).gr_name
    except (KeyError, OverflowError):
        user, group = str(dev["uid"]), str(dev["gid"])
    return f"{dev['mode'][2:].rjust(4, '0')} {user}:{group}"


def summary_line(tests: list[dict], probed: ProbeResult | None) -> str | None:
    """None where the run could open a userfaultfd; else the line that says what to change
    (the sysctl, /dev/userfaultfd's mode and group, root) and which tests that unlocks."""
    if probed is None or probed.api:
        return None
    locked = [t for t in tests if t["verdict"] == "skip"
              and t.get("reason", "").startswith(NO_UFFD)]
    root_only = [t for t in tests if t["verdict"] == "skip" and t not in locked
                 and cause_of(t.get("reason", "")).kind == "capability"]
    access = probed.access
    ways = []
    if access.get("unprivileged_userfaultfd") == 0:
        ways.append("`sysctl vm.unprivileged_userfaultfd=1` (now 0)")
    dev = access["dev_userfaultfd"]
    if dev.get("exists"):
        ways.append(f"read-write access to /dev/userfaultfd (now {_owner(access)}: e.g. "
                    "`chgrp GROUP /dev/userfaultfd && chmod 0660 /dev/userfaultfd`, or a udev "
                    "rule, with this user in GROUP)")
    ways.append("running as root" + (f" (which also runs {len(root_only)} root-only "
                                     f"test{'s' * (len(root_only) != 1)})" if root_only else ""))
    umo = probed.open.get("user_mode_only")
    umo_note = ("; user-mode-only fds (UFFD_USER_MODE_ONLY) are open to this user already, but "
                "the suites need full ones (faults from the kernel's own accesses too)"
                if umo and umo.get("ok") else "")
    return (f"no userfaultfd for uid {access['euid']}: {len(locked)} of {len(tests)} tests "
            f"skipped for it would run after any of: " + "; ".join(ways) + umo_note)
