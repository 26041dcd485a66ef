# SPDX-License-Identifier: GPL-2.0-only
"""Only a failure of a known bug's own check gives a known-bug verdict: the plugin records what
failed (in xdist workers too) and the runner classifies it. A fake suite, no kernel needed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from uffdwp.kernel_version import KernelVersion
from uffdwp.runner import session
from uffdwp.runner.bugcheck import bug_check, checked_bug, failure_kind
from uffdwp.runner.command import _classify

FAKE_SUITE = '''
import errno, os
import pytest
from uffdwp.runner.bugcheck import bug_check

BUG = "hugetlb-unshare"

@pytest.fixture(autouse=True)
def tied_to_bug(request):
    request.node.user_properties.append(("memtype", "hugetlb-private"))
    request.node.user_properties.append(("bug", BUG))

def test_bug_check_fails():
    with bug_check(BUG):
        assert [False] == [True], "uffd-wp bit lost when the pinned page was unshared"

def test_precondition_raises_before_the_check():
    raise OSError(errno.EINVAL, "Invalid argument")  # O_DIRECT write on tmpfs
    with bug_check(BUG):
        assert False

def test_exception_inside_the_check():
    with bug_check(BUG):
        raise OSError(errno.EINVAL, "Invalid argument")

def test_other_assertion_before_the_check():
    assert False, "precondition: the page is protected before the fork"
    with bug_check(BUG):
        assert True

def test_timeout_like_failure_inside_the_check():
    with bug_check(BUG):
        pytest.fail("Timeout >20.0s")

def test_check_passes_then_later_assertion_fails():
    with bug_check(BUG):
        assert True
    assert False, "data after the check"

def test_skip_naming_the_environment():
    pytest.skip("no O_DIRECT on /var/tmp (tmpfs): EINVAL")

def test_bug_check_passes():
    with bug_check(BUG):
        assert True

def test_second_of_two_bugs_fails():  # declares BUG, shows "close-reset" in its second check
    with bug_check(BUG):
        assert True
    with bug_check("close-reset"):
        assert False, "stale uffd-wp bit survived close()"
'''

OLD, FIXED = KernelVersion(6, 1, 176), KernelVersion(6, 18, 44)
EXPECTED = {  # test -> (verdict on a kernel without the fix, on a kernel with it)
    "test_bug_check_fails": ("known-bug", "fail"),
    "test_precondition_raises_before_the_check": ("error", "error"),
    "test_exception_inside_the_check": ("error", "error"),
    "test_other_assertion_before_the_check": ("fail", "fail"),
    "test_timeout_like_failure_inside_the_check": ("error", "error"),
    "test_check_passes_then_later_assertion_fails": ("fail", "fail"),
    "test_skip_naming_the_environment": ("skip", "skip"),
    "test_bug_check_passes": ("pass", "pass"),
    "test_second_of_two_bugs_fails": ("known-bug", "fail"),
}


def run_fake_suite(tmp_path: Path, source: str, jobs: str = "1") -> list[dict]:
    """The test events of a fake suite (*source*) run through the runner's pytest command."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_fake.py").write_text(textwrap.dedent(source))
    events = tmp_path / "events.jsonl"
    cmd = session.pytest_command(suite, events, jobs=jobs)
    proc = session.start(cmd, tmp_path / "pytest.log")
    out = [e for e in session.follow(proc, events, poll=0.05) if e["event"] == "test"]
    proc.wait()
    return out


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_only_the_bug_check_gives_known_bug(tmp_path, jobs):
    events = run_fake_suite(tmp_path, FAKE_SUITE, jobs)
    assert sorted(e["test"] for e in events) == sorted(EXPECTED)
    for e in events:
        old, fixed = (_classify(e, kv) for kv in (OLD, FIXED))
        assert (old["verdict"], fixed["verdict"]) == EXPECTED[e["test"]], (e, old, fixed)
        if e["test"] == "test_second_of_two_bugs_fails":
            assert e["bug"] == "close-reset" and old["bug"]["commit"] == "c88033efe9a3"
        elif e["test"] == "test_bug_check_fails":
            assert e["failure"] == "bug-check"
            assert old["reason"].startswith("known bug 0f230bc24b6e")
            assert fixed["reason"].startswith("regression: known bug 0f230bc24b6e")
            assert "uffd-wp bit lost" in old["reason"]
        else:
            assert "known bug" not in old["reason"].split(" (")[0]
    kinds = {e["test"]: e["failure"] for e in events}
    assert kinds["test_precondition_raises_before_the_check"] == "exception"
    assert kinds["test_other_assertion_before_the_check"] == "assertion"
    assert kinds["test_bug_check_passes"] is None


def test_bug_check_marks_only_assertions_of_its_block():
    with pytest.raises(AssertionError) as info, bug_check("close-reset"):
        raise AssertionError("stale bit")
    assert checked_bug(info.value) == "close-reset" and failure_kind(info.value) == "bug-check"
    with pytest.raises(OSError) as info, bug_check("close-reset"):
        raise OSError(22, "Invalid argument")
    assert checked_bug(info.value) is None and failure_kind(info.value) == "exception"
    with pytest.raises(AssertionError) as info, bug_check(None):  # a memory type without the bug
        raise AssertionError("x")
    assert failure_kind(info.value) == "assertion"
