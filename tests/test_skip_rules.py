# SPDX-License-Identifier: GPL-2.0-only
"""The one place that decides skips (suites/uffdtest.py): pure logic, no kernel needed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from suites.capabilities import Capability
from suites.uffdtest import (
    MEM_ANON,
    MEM_FILE,
    MEM_SHARED,
    MEM_SWAPPABLE,
    MINOR,
    MISSING,
    WP,
    Requires,
    UffdSpec,
    implied_features,
    missing_reason,
    uffd_test,
)
from uffdwp.kernel_facts import Feature, RegisterMode
from uffdwp.memory import MemType

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


def test_the_memory_type_table_is_the_kernels():
    """mem_type_t: how each type is mapped, and what it is made of."""
    rows = {t.value: (t.shared, t.file_backed, t.hugetlb, t.swappable) for t in MemType}
    assert rows == {"anon": (False, False, False, True), "shmem": (True, True, False, True),
                    "shmem-private": (False, True, False, True),
                    "hugetlb": (True, True, True, False),
                    "hugetlb-private": (False, False, True, False)}
    assert MEM_SHARED == ("shmem", "hugetlb") and MEM_ANON == ("anon",)
    assert MEM_FILE == ("shmem", "shmem-private", "hugetlb")
    assert MEM_SWAPPABLE == ("anon", "shmem", "shmem-private")
    assert not MemType.ANON.takes(MINOR) and MemType.HUGETLB_PRIVATE.takes(MINOR | WP)
    with pytest.raises(ValueError, match="unknown memory type 'hugepages'"):
        MemType.of("hugepages")


def test_minor_on_anonymous_memory_cannot_be_declared():
    with pytest.raises(ValueError, match="does not apply to anon"):
        uffd_test(mem=("anon", "shmem"), modes=MINOR)
    with pytest.raises(ValueError, match="per_mem"):
        uffd_test(mem=("shmem",), per_mem={"anon": pytest.mark.skip})


def test_a_case_without_memory_type_needs_only_what_it_declares():
    assert UffdSpec(modes=RegisterMode(0)).requires(None) == Requires()
    assert UffdSpec(Feature.EVENT_FORK, WP).requires(None).features == \
        Feature.EVENT_FORK | Feature.PAGEFAULT_FLAG_WP


def test_features_decide_first_then_capabilities_in_order():
    probed = []

    def absent(name):
        def probe():
            probed.append(name)
            return f"no {name}"
        return Capability(name, probe)

    need = Requires(Feature.WP_UNPOPULATED, (absent("a"), absent("b")))
    assert need.missing(KERNEL_6_1) == \
        "feature WP_UNPOPULATED (mainline 6.4) absent on this kernel"
    assert probed == []
    assert need.missing(KERNEL_6_1 | Feature.WP_UNPOPULATED) == "no a"
    assert absent("c").because("why").missing() == "no c: why"


def test_a_parameters_need_can_be_limited_to_memory_types():
    marker = Requires(Feature.WP_UNPOPULATED, mem=("anon",))
    assert marker.applies_to("anon") and not marker.applies_to("shmem")
    assert Requires(Feature.EVENT_FORK).applies_to(None)



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
