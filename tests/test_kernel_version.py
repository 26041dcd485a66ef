# SPDX-License-Identifier: GPL-2.0-only
"""uffdwp.kernel_version: the upstream version of a kernel from uname -r, uname -v and
/proc/version_signature."""

from __future__ import annotations

import pytest

from uffdwp.kernel_version import KernelVersion, at_least, kernel_version, release_number, running

DEBIAN12_V = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1 (2025-11-09)"


@pytest.mark.parametrize(("release", "version", "signature", "expected"), [
    ("6.18.44-fc-v595", "#1 SMP PREEMPT_DYNAMIC @0", "", KernelVersion(6, 18, 44)),
    ("6.8.9-300.fc40.x86_64", "", "", KernelVersion(6, 8, 9)),
    ("6.9.0", "", "", KernelVersion(6, 9, 0)),
    ("6.9", "", "", KernelVersion(6, 9, 0)),
    ("6.10.0-rc3", "", "", KernelVersion(6, 10, 0, rc=True)),
    ("6.1.0-56-amd64", DEBIAN12_V, "", KernelVersion(6, 1, 158)),
    ("5.10.0-26-amd64", "#1 SMP Debian 5.10.197-1 (2023-09-29)", "", KernelVersion(5, 10, 197)),
    ("6.1.0-56-amd64", "#1 SMP PREEMPT_DYNAMIC", "", KernelVersion(6, 1, None)),
    # A Debian version string of another series does not vouch for this one.
    ("6.1.0-56-amd64", "#1 SMP Debian 6.12.38-1~bpo12+1", "", KernelVersion(6, 1, None)),
    ("5.15.0-91-generic", "#101-Ubuntu SMP Tue Nov 14 13:30:08 UTC 2023",
     "Ubuntu 5.15.0-91.101-generic 5.15.131", KernelVersion(5, 15, 131)),
])
def test_kernel_version(release, version, signature, expected):
    assert kernel_version(release, version, signature) == expected


def test_kernel_version_unparsable():
    assert kernel_version("weird") is None


def test_running_kernel_parses():
    kv = running()
    assert kv is not None and kv.series >= (2, 6)



@pytest.mark.parametrize(("text", "expected"), [
    ("6.1.26", (6, 1, 26)), ("6.13", (6, 13, None)), ("6.1.y", (6, 1, None)), ("x", None),
])
def test_release_number(text, expected):
    assert release_number(text) == expected


def test_at_least():
    kv = KernelVersion(5, 10, 223)
    assert at_least(kv, "5.7") and at_least(kv, "5.10") and not at_least(kv, "5.13")
    assert not at_least(None, "4.3")
