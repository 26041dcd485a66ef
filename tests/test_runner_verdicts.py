"""uffdwp.runner.verdicts: kernel versions, fix status of known bugs, verdicts, exit status."""

from __future__ import annotations

import pytest

from uffdwp.kernel_facts import KNOWN_BUGS, KnownBug
from uffdwp.kernel_version import KernelVersion, kernel_version
from uffdwp.runner.verdicts import (
    KSFT_FAIL,
    KSFT_PASS,
    KSFT_SKIP,
    bug_info,
    classify,
    exit_status,
    fix_status,
    summarize,
)

DEBIAN12_V = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1 (2025-11-09)"


BUG = KnownBug("t", "title", "abcdef123456", "6.3", ("6.1.26",))
BUG_Y = KnownBug("t", "title", "abcdef123456", "6.2", ("6.1.y",))


@pytest.mark.parametrize(("bug", "kv", "expected"), [
    (BUG, KernelVersion(6, 3, 0), "fixed"),
    (BUG, KernelVersion(6, 18, 44), "fixed"),
    (BUG, KernelVersion(6, 3, 0, rc=True), "unknown"),
    (BUG, KernelVersion(6, 2, 16), "unfixed"),
    (BUG, KernelVersion(6, 1, 26), "fixed"),  # the stable backport
    (BUG, KernelVersion(6, 1, 158), "fixed"),
    (BUG, KernelVersion(6, 1, 25), "unfixed"),
    (BUG, KernelVersion(6, 1, None), "unknown"),  # Debian without uname -v
    (BUG, KernelVersion(5, 15, 200), "unfixed"),
    (BUG_Y, KernelVersion(6, 1, 158), "unknown"),  # "6.1.y": sublevel not recorded
    (BUG_Y, KernelVersion(6, 2, 0), "fixed"),
    (BUG, None, "unknown"),
])
def test_fix_status(bug, kv, expected):
    assert fix_status(bug, kv) == expected


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
                               KernelVersion(6, 6, 30))
    assert verdict == "known-bug"
    assert reason.startswith("known bug c88033efe9a3, fixed in 6.9")
    assert "AssertionError: page writable" in reason and "more" not in reason
    assert "unknown" not in reason


def test_known_bug_on_backported_stable_is_regression():
    verdict, reason = classify("failed", "boom", "close-reset", KernelVersion(6, 8, 10))
    assert verdict == "fail"
    assert reason.startswith("regression: known bug c88033efe9a3")


def test_known_bug_on_kernel_with_fix_is_regression():
    verdict, reason = classify("failed", "boom", "close-reset", KernelVersion(6, 18, 44))
    assert verdict == "fail" and "fixed in 6.9" in reason and reason.endswith("boom")


def test_known_bug_unknown_sublevel_stays_known_bug():
    kv = kernel_version("6.8.0-31-generic", "#31-Ubuntu SMP")
    verdict, reason = classify("failed", "boom", "close-reset", kv)
    assert verdict == "known-bug" and "fix status unknown" in reason


def test_passing_bug_test_is_pass():
    assert classify("passed", "", "close-reset", KernelVersion(5, 10, 0)) == ("pass", "")


def test_bug_info():
    assert bug_info("close-reset") == {"key": "close-reset", "commit": "c88033efe9a3",
                                       "fixed_in": "6.9"}
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
