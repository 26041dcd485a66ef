"""The one place that decides skips (suites/uffdtest.py): pure logic, no kernel needed."""

from __future__ import annotations

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
