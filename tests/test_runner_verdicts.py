# SPDX-License-Identifier: GPL-2.0-only
"""uffdwp.runner.verdicts: kernel versions, fix status of known bugs, verdicts, exit status."""

from __future__ import annotations

import pytest

from uffdwp.kernel_version import KernelVersion, kernel_version
from uffdwp.known_bugs import KNOWN_BUGS, KnownBug, StableFix
from uffdwp.runner.verdicts import (
    KSFT_FAIL,
    KSFT_PASS,
    KSFT_SKIP,
    bug_info,
    classify,
    exit_status,
    fix_release,
    fix_status,
    summarize,
)

DEBIAN12_V = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1 (2025-11-09)"


BUG = KnownBug("t", "title", "abcdef123456", "6.3", "test",
               (StableFix("6.2", None, "failed to apply"), StableFix("6.1", "6.1.26", "test")))


@pytest.mark.parametrize(("bug", "kv", "expected"), [
    (BUG, KernelVersion(6, 3, 0), "fixed"),
    (BUG, KernelVersion(6, 18, 44), "fixed"),
    (BUG, KernelVersion(6, 3, 0, rc=True), "unknown"),
    (BUG, KernelVersion(6, 2, 16), "unfixed"),
    (BUG, KernelVersion(6, 1, 26), "fixed"),  # the stable backport
    (BUG, KernelVersion(6, 1, 158), "fixed"),
    (BUG, KernelVersion(6, 1, 25), "unfixed"),
    (BUG, KernelVersion(6, 1, None), "unknown"),  # Debian without uname -v
    (BUG, KernelVersion(5, 15, 200), "unfixed"),  # a series without a backport
    (BUG, KernelVersion(6, 2, 16), "unfixed"),  # a series the backport never reached
    (BUG, None, "unknown"),
])
def test_fix_status(bug, kv, expected):
    assert fix_status(bug, kv) == expected


@pytest.mark.parametrize(("kv", "release"), [
    (KernelVersion(6, 1, 3), "6.1.26"), (KernelVersion(6, 5, 0), "6.3"),
    (KernelVersion(6, 2, 1), None), (KernelVersion(5, 10, 1), None), (None, None),
])
def test_fix_release_is_the_series_own(kv, release):
    assert fix_release(BUG, kv) == release


@pytest.mark.parametrize(("key", "kv", "expected"), [
    # the series' own backports, as the issue lists them
    ("mremap-clear", KernelVersion(6, 1, 176), "unfixed"),
    ("mremap-clear", KernelVersion(6, 1, 191), "fixed"),
    ("mremap-clear", KernelVersion(6, 12, 10), "unfixed"),
    ("mremap-clear", KernelVersion(6, 12, 11), "fixed"),
    ("close-reset", KernelVersion(6, 6, 30), "unfixed"),
    ("close-reset", KernelVersion(6, 6, 31), "fixed"),
    ("close-reset", KernelVersion(6, 1, 192), "fixed"),
    ("close-reset", KernelVersion(5, 10, 223), "unfixed"),
    ("hugetlb-fork", KernelVersion(6, 1, 192), "unfixed"),  # failed to apply to 6.1
    ("fork-special-cases", KernelVersion(5, 10, 53), "fixed"),
    ("fork-special-cases", KernelVersion(5, 10, 52), "unfixed"),
    ("hugetlb-cow-wp", KernelVersion(6, 1, 24), "fixed"),
    ("mthp-zeropage", KernelVersion(6, 12, 54), "fixed"),
    ("mthp-zeropage", KernelVersion(6, 12, 53), "unfixed"),
])
def test_fix_status_of_the_table(key, kv, expected):
    assert fix_status(KNOWN_BUGS[key], kv) == expected


def test_fix_status_debian_sublevel_from_uname_v():
    thp = KNOWN_BUGS["thp-migration"]  # fixed in 6.3, backported to 6.1.26
    assert fix_status(thp, kernel_version("6.1.0-56-amd64", DEBIAN12_V)) == "fixed"
    assert fix_status(thp, kernel_version("6.1.0-9-amd64", "#1 SMP Debian 6.1.20-1")) == "unfixed"
    assert fix_status(thp, kernel_version("6.1.0-56-amd64", "#1 SMP")) == "unknown"


@pytest.mark.parametrize(("outcome", "verdict"), [
    ("passed", "pass"), ("skipped", "skip"), ("failed", "fail"), ("error", "error"),
    ("xfailed", "known-bug"), ("xpassed", "pass"), ("something-new", "error"),
])
def test_classify_without_bug(outcome, verdict):
    assert classify(outcome, "why", None, KernelVersion(6, 1, 0))[0] == verdict


def test_skip_keeps_reason():
    reason = "feature WP_UNPOPULATED (mainline 6.4) absent on this kernel"
    assert classify("skipped", reason, None, None) == ("skip", reason)


def test_known_bug_on_old_kernel():
    verdict, reason = classify("failed", "AssertionError: page writable\nmore", "close-reset",
                               KernelVersion(6, 6, 30), "bug-check")
    assert verdict == "known-bug"
    assert reason.startswith("known bug c88033efe9a3, fixed in 6.9")
    assert "AssertionError: page writable" in reason and "more" not in reason
    assert "unknown" not in reason


def test_known_bug_on_backported_stable_is_regression():
    verdict, reason = classify("failed", "boom", "close-reset", KernelVersion(6, 8, 10),
                               "bug-check")
    assert verdict == "fail"
    assert reason.startswith("regression: known bug c88033efe9a3")
    assert "has the fix of its series (6.8.10" in reason


def test_known_bug_on_kernel_with_fix_is_regression():
    verdict, reason = classify("failed", "boom", "close-reset", KernelVersion(6, 18, 44),
                               "bug-check")
    assert verdict == "fail" and "fixed in 6.9" in reason and reason.endswith("boom")


def test_debian_kernel_past_its_series_fix_is_regression():
    kv = kernel_version("6.1.0-57-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-01-20)")
    assert classify("failed", "boom", "mremap-clear", kv, "bug-check")[0] == "fail"
    kv = kernel_version("6.1.0-50-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2025-10-01)")
    assert classify("failed", "boom", "mremap-clear", kv, "bug-check")[0] == "known-bug"


@pytest.mark.parametrize("kv", [KernelVersion(6, 1, 176), KernelVersion(6, 18, 44), None])
@pytest.mark.parametrize(("failure", "verdict"), [
    ("assertion", "fail"),  # another check of the test failed: a failure, not the bug
    ("exception", "error"),  # a precondition raised (EINVAL from O_DIRECT on tmpfs...)
    (None, "error"),  # nothing says it was the bug's check: never the bug
])
def test_failure_outside_the_bug_check_is_never_known_bug(kv, failure, verdict):
    got, reason = classify("failed", "OSError: [Errno 22] Invalid argument", "hugetlb-unshare",
                           kv, failure)
    assert got == verdict
    assert "outside the check" in reason or "other than the one" in reason
    assert "0f230bc24b6e" in reason and "OSError" in reason


def test_known_bug_unknown_sublevel_stays_known_bug():
    kv = kernel_version("6.8.0-31-generic", "#31-Ubuntu SMP")
    verdict, reason = classify("failed", "boom", "close-reset", kv, "bug-check")
    assert verdict == "known-bug" and "fix status unknown" in reason


def test_passing_bug_test_is_pass():
    assert classify("passed", "", "close-reset", KernelVersion(5, 10, 0)) == ("pass", "")


def test_bug_info():
    assert bug_info("close-reset") == {
        "key": "close-reset", "commit": "c88033efe9a3", "fixed_in": "6.9",
        "stable": {"6.8": "6.8.10", "6.6": "6.6.31", "6.1": "6.1.191"},
        "fix_status": "unknown", "fix_release": None}
    info = bug_info("close-reset", KernelVersion(6, 1, 176))
    assert (info["fix_status"], info["fix_release"]) == ("unfixed", "6.1.191")
    assert bug_info(None) is None
    assert bug_info("no-such-bug") is None


def test_summarize_counts_every_verdict():
    s = summarize(["pass", "pass", "skip", "known-bug", "weird"])
    assert s == {"pass": 2, "fail": 0, "skip": 1, "known-bug": 1, "error": 1}


@pytest.mark.parametrize(("counts", "allow", "expected"), [
    ({"pass": 3}, False, KSFT_PASS),
    ({"pass": 3, "skip": 2}, False, KSFT_PASS),
    ({"skip": 2}, False, KSFT_SKIP),
    ({}, False, KSFT_SKIP),
    ({"pass": 3, "fail": 1}, False, KSFT_FAIL),
    ({"pass": 3, "error": 1}, True, KSFT_FAIL),
    ({"pass": 3, "known-bug": 1}, False, KSFT_FAIL),
    ({"pass": 3, "known-bug": 1}, True, KSFT_PASS),
    ({"skip": 3, "known-bug": 1}, True, KSFT_PASS),
])
def test_exit_status(counts, allow, expected):
    assert exit_status(summarize([v for v, n in counts.items() for _ in range(n)]),
                       allow) == expected
