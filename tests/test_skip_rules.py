# SPDX-License-Identifier: GPL-2.0-only
"""The one place that decides skips (suites/uffdtest.py): pure logic, no kernel needed."""

from __future__ import annotations

import ast
from pathlib import Path

from suites.uffdtest import MINOR, MISSING, WP, implied_features, missing_reason
from uffdwp.kernel_facts import Feature

KERNEL_6_1 = Feature(0x1FFF)  # what Debian's 6.1 negotiates


def test_missing_feature_names_it_and_its_release():
    reason = missing_reason(Feature.WP_UNPOPULATED, KERNEL_6_1)
    assert reason == "feature WP_UNPOPULATED (mainline 6.4) absent on this kernel"


def test_present_features_do_not_skip():
    assert missing_reason(Feature.PAGEFAULT_FLAG_WP | Feature.THREAD_ID, KERNEL_6_1) is None


def test_modes_imply_per_memory_type_features():
    assert implied_features("anon", WP) == Feature.PAGEFAULT_FLAG_WP
    assert implied_features("shmem", WP) == Feature.PAGEFAULT_FLAG_WP | Feature.WP_HUGETLBFS_SHMEM
    assert implied_features("hugetlb-private", MINOR) == Feature.MINOR_HUGETLBFS
    assert implied_features("shmem-private", MISSING) == Feature.MISSING_SHMEM
    assert implied_features("anon", MISSING) == Feature(0)



def _tests_tied_to_a_bug():
    """(name, source) of every suite test whose @uffd_test declares bug=..., read with ast (no
    suite module is imported here)."""
    suites = Path(__file__).resolve().parent.parent / "suites"
    for path in sorted(suites.glob("test_*.py")):
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                if (isinstance(dec, ast.Call) and getattr(dec.func, "id", "") == "uffd_test"
                        and any(k.arg == "bug" for k in dec.keywords)):
                    yield f"{path.name}::{node.name}", ast.get_source_segment(text, node)


def test_every_test_tied_to_a_bug_declares_the_check_that_shows_it():
    """A known-bug verdict comes only from ctx.bug_check(): a test declaring a bug without one
    could never report it, and the check is what keeps a failed precondition from reading as
    the bug."""
    tied = dict(_tests_tied_to_a_bug())
    assert len(tied) >= 18
    helpers = ("_assert_no_wp_state", "_mprotect_roundtrip_still_traps",  # hold the check
               "_wp_race_once")
    missing = [name for name, src in tied.items()
               if "ctx.bug_check(" not in src and not any(h in src for h in helpers)]
    assert not missing
