# SPDX-License-Identifier: GPL-2.0-only
"""The upstream version of a kernel, from what the kernel says about itself: the one parser.

`uname -r` alone is not enough on distribution kernels: Debian and Ubuntu number their ABI
("6.1.0-50-amd64") and name the upstream sublevel elsewhere (Debian in `uname -v`, Ubuntu in
/proc/version_signature). Versions are for reports and for telling a known bug from a
regression; nothing gates behaviour on them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KernelVersion:
    major: int
    minor: int
    sublevel: int | None  # None: the release string does not say (distro ABI numbering)
    rc: bool = False  # a -rc pre-release of major.minor

    @property
    def series(self) -> tuple[int, int]:
        return self.major, self.minor

    def __str__(self) -> str:
        sub = "?" if self.sublevel is None else str(self.sublevel)
        return f"{self.major}.{self.minor}.{sub}{'-rc' if self.rc else ''}"


_RELEASE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(.*)$")
# Debian's uname -v names the package version: "... Debian 6.1.158-1 (2025-...)".
_DEBIAN = re.compile(r"Debian (\d+)\.(\d+)\.(\d+)")
# Ubuntu's /proc/version_signature ends with the upstream version: "Ubuntu 5.15.0-91.101-generic
# 5.15.131".
_SIGNATURE = re.compile(r"(\d+)\.(\d+)\.(\d+)\s*$")


def kernel_version(release: str, version: str = "", signature: str = "") -> KernelVersion | None:
    """The upstream version of a running kernel, from uname -r, uname -v and (Ubuntu)
    /proc/version_signature. None if the release string is not x.y[.z]..."""
    m = _RELEASE.match(release.strip())
    if not m:
        return None
    major, minor = int(m.group(1)), int(m.group(2))
    sub = int(m.group(3)) if m.group(3) is not None else None
    rest = m.group(4)
    rc = bool(re.match(r"-rc\d", rest))
    if sub:
        return KernelVersion(major, minor, sub, rc)
    # "x.y.0-<digits>-flavour" is Debian/Ubuntu ABI numbering: the 0 is not the sublevel.
    if re.match(r"-\d", rest):
        for pattern, text in ((_DEBIAN, version), (_SIGNATURE, signature)):
            d = pattern.search(text or "")
            if d and (int(d.group(1)), int(d.group(2))) == (major, minor):
                return KernelVersion(major, minor, int(d.group(3)))
        return KernelVersion(major, minor, None)
    return KernelVersion(major, minor, 0, rc)


def release_number(text: str) -> tuple[int, int, int | None] | None:
    """A release as the facts table writes it: '6.1.26' -> (6, 1, 26); '6.13' -> (6, 13, None);
    '6.1.y' -> (6, 1, None). None if *text* is not one."""
    m = _RELEASE.match(text.strip())
    if not m or m.group(4) not in ("", ".y") or (m.group(3) and m.group(4)):
        return None
    sub = m.group(3)
    return int(m.group(1)), int(m.group(2)), int(sub) if sub is not None else None


def at_least(kv: KernelVersion | None, release: str) -> bool:
    """Whether *kv*'s series is at or past the mainline *release* ('5.13'); False if unknown."""
    number = release_number(release)
    return kv is not None and number is not None and kv.series >= number[:2]


def version_signature() -> str:
    try:
        return Path("/proc/version_signature").read_text().strip()  # Ubuntu only
    except OSError:
        return ""


def running() -> KernelVersion | None:
    """The version of the kernel this process runs on."""
    u = os.uname()
    return kernel_version(u.release, u.version, version_signature())
