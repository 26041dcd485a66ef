# SPDX-License-Identifier: GPL-2.0-only
"""An unmet precondition (a race window never exercised) is a skip that names it: never a
failure, never a known bug or its regression, whatever bug the test is tied to. A fake suite
run through the runner's own pytest command and classification; no kernel needed."""

from __future__ import annotations

import time

import pytest

from uffdwp.kernel_version import KernelVersion
from uffdwp.runner import precondition, skips
from uffdwp.runner.command import _classify
from uffdwp.runner.precondition import require, retry, unmet

from .test_runner_bugcheck import run_fake_suite

FAKE_SUITE = '''
import pytest
from uffdwp.runner.bugcheck import bug_check
from uffdwp.runner.precondition import require, retry

BUG = "wp-race-corruption"
ATTEMPTS = {}

@pytest.fixture(autouse=True)
def tied_to_bug(request):
    request.node.user_properties.append(("memtype", "hugetlb"))
    request.node.user_properties.append(("bug", BUG))

def race(name, cycles_per_attempt, lost=False):
    """One attempt of a race test: the data check first, then whether the race was raced."""
    n = ATTEMPTS[name] = ATTEMPTS.get(name, 0) + 1
    cycles = cycles_per_attempt[min(n, len(cycles_per_attempt)) - 1]
    with bug_check(BUG):
        assert not lost, "lost write at 0x7f0000000000: 0x0 != 0x10000000017"
    require(cycles > 5, "race window not exercised", f"{cycles} protect cycles; needs > 5")

def test_window_never_exercised():
    retry(lambda: race("never", [4]), tries=3)

def test_window_exercised_on_the_second_attempt():
    retry(lambda: race("second", [4, 40]), tries=3)

def test_lost_write_although_window_not_exercised():
    retry(lambda: race("lost", [4], lost=True), tries=3)

def test_require_outside_retry():
    require(False, "race window not exercised", "0 WP faults")

def test_precondition_as_plain_assertion():  # the race test as it was at 90205e5
    cycles = 4
    assert cycles > 5, "the race window was never exercised"
    with bug_check(BUG):
        assert True
'''

OLD, FIXED = KernelVersion(5, 10, 10), KernelVersion(6, 1, 176)  # fixed in 5.12, 5.10.24
EXPECTED = {  # test -> (verdict on a kernel without the fix, on a kernel with it)
    "test_window_never_exercised": ("skip", "skip"),
    "test_window_exercised_on_the_second_attempt": ("pass", "pass"),
    "test_lost_write_although_window_not_exercised": ("known-bug", "fail"),
    "test_require_outside_retry": ("skip", "skip"),
    "test_precondition_as_plain_assertion": ("fail", "fail"),
}


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> dict[str, dict]:
    return {e["test"]: e for e in run_fake_suite(tmp_path_factory.mktemp("precondition"),
                                                 FAKE_SUITE)}


def test_unmet_precondition_is_a_skip_never_the_bug(events):
    assert sorted(events) == sorted(EXPECTED)
    for name, e in events.items():
        got = tuple(_classify(e, kv)["verdict"] for kv in (OLD, FIXED))
        assert got == EXPECTED[name], (name, e)
    never = _classify(events["test_window_never_exercised"], FIXED)
    assert never["reason"] == ("precondition not met: race window not exercised (3 attempts, "
                               "last: 4 protect cycles; needs > 5)")
    assert never["bug"]["commit"] == "6ce64428d620"  # still tied to its bug, only skipped
    lost = _classify(events["test_lost_write_although_window_not_exercised"], FIXED)
    assert lost["reason"].startswith("regression: known bug 6ce64428d620")  # not retried away


def test_the_plain_assertion_was_a_regression_at_90205e5(events):
    """At 90205e5 every failure of a test tied to a known bug was that bug: the race test's
    "the race window was never exercised" gave "regression" on a kernel with the fix (the
    issue's Vagrant 6.1 run). Today's runner only calls it a failure; as a precondition it is a
    skip."""
    plain = events["test_precondition_as_plain_assertion"]
    as_at_90205e5 = _classify({**plain, "failure": "bug-check"}, FIXED)
    assert as_at_90205e5["verdict"] == "fail"
    assert as_at_90205e5["reason"].startswith("regression: known bug 6ce64428d620")
    assert "race window was never exercised" in as_at_90205e5["reason"]
    assert "(a check other than the one showing known bug" in _classify(plain, FIXED)["reason"]


def test_precondition_skips_group_by_what_was_not_met(events):
    tests = [_classify(events[n], FIXED) for n in
             ("test_window_never_exercised", "test_require_outside_retry")]
    groups = skips.skip_groups(tests)
    assert len(groups) == 1
    assert groups[0].cause == skips.Cause("precondition", "race window not exercised")
    assert len(groups[0].reasons) == 2  # the figures of each stay in the reasons


def test_retry_stops_at_its_budget():
    calls = []

    def slow() -> None:
        calls.append(1)
        time.sleep(0.2)
        require(False, "window", "missed")

    with pytest.raises(pytest.skip.Exception) as info:
        retry(slow, tries=10, budget_s=0.5)
    assert len(calls) == 2  # a third attempt would have ended past 0.5 s
    assert unmet(info.value) == ("window", "2 attempts, last: missed")
    assert info.value.msg == precondition.reason("window", "2 attempts, last: missed")


def test_retry_passes_other_outcomes_through():
    def lost_write() -> None:
        raise AssertionError("lost write")

    with pytest.raises(AssertionError):
        retry(lost_write)
    with pytest.raises(pytest.skip.Exception) as info:
        retry(lambda: pytest.skip("hugetlb unavailable"))
    assert unmet(info.value) is None
    with pytest.raises(ValueError):
        retry(lambda: None, tries=0)


def test_retry_returns_the_result_of_the_attempt_that_met_it():
    seen = iter([False, True])
    assert retry(lambda: require(next(seen), "x") or "done") == "done"
