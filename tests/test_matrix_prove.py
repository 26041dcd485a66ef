# SPDX-License-Identifier: GPL-2.0-only
"""The proof recipes of vms/prove-known-bugs.sh and the kernel config fragment: consistency
checks, no build, no VM."""

from __future__ import annotations

import re
import subprocess

import pytest

from uffdwp.known_bugs import KNOWN_BUGS
from uffdwp.matrix import VMS_DIR, prove
from uffdwp.matrix.catalogue import load_catalogue, select


def test_every_recipe_names_a_known_bug_and_kernels_that_exist():
    bugs = [p.bug for p in prove.PROOFS]
    assert len(bugs) == len(set(bugs)) and set(bugs) <= set(KNOWN_BUGS)
    patches = {p.stem for p in prove.REVERTS.glob("*.patch")}
    catalogue = load_catalogue()
    for p in prove.PROOFS:
        for kernel in (p.without, p.with_fix):
            if kernel == prove.SRC:
                continue
            if kernel.startswith(f"{prove.SRC}-no-"):
                assert kernel == prove.revert(p.bug) and p.bug in patches
            else:
                assert select(catalogue, kernel)  # a catalogue name or a pinned Debian build


@pytest.mark.parametrize("patch", sorted(prove.REVERTS.glob("*.patch")), ids=lambda p: p.stem)
def test_reverse_patches_are_small_and_explain_themselves(patch):
    text = patch.read_text()
    assert patch.stem in KNOWN_BUGS
    header = text.split("\n--- a/", 1)[0]
    assert re.search(r"\b[0-9a-f]{12}\b", header), "the header names the fix commit it reverts"
    changed = [ln for ln in text.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
    assert 0 < len(changed) <= 20


def test_proven_and_table():
    assert prove.proven("known-bug", "pass") and prove.proven("fail", "pass")
    assert not prove.proven("skip", "pass") and not prove.proven("known-bug", "skip")
    md = prove.table([{"bug": "close-reset", "without": "6.1.0-50", "without_verdict": "known-bug",
                       "with": "6.1", "with_verdict": "pass", "proven": True}])
    assert "| close-reset | 6.1.0-50 | known-bug | 6.1 | pass | yes " in md
    assert "`vms/prove-known-bugs.sh close-reset`" in md


def test_config_fragment_turns_on_what_the_suites_need():
    text = (VMS_DIR / "uffdwp.config").read_text()
    options = set(re.findall(r"^(CONFIG_\w+)=y$", text, re.M))
    for needed in ("CONFIG_USERFAULTFD", "CONFIG_PTE_MARKER_UFFD_WP", "CONFIG_HUGETLBFS",
                   "CONFIG_TRANSPARENT_HUGEPAGE", "CONFIG_SWAP", "CONFIG_9P_FS",
                   "CONFIG_NET_9P_VIRTIO", "CONFIG_VIRTIO_PCI", "CONFIG_VIRTIO_BLK",
                   "CONFIG_OVERLAY_FS", "CONFIG_EXT4_FS", "CONFIG_PROC_PAGE_MONITOR",
                   "CONFIG_DEVTMPFS", "CONFIG_BLK_DEV_INITRD", "CONFIG_SERIAL_8250_CONSOLE"):
        assert needed in options
    assert not re.search(r"^CONFIG_\w+=m$", text, re.M), "everything built in: no modules"
    subprocess.run(["sh", "-n", str(VMS_DIR / "build-kernel.sh")], check=True)
    subprocess.run(["sh", "-n", str(VMS_DIR / "prove-known-bugs.sh")], check=True)
