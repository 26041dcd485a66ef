# SPDX-License-Identifier: GPL-2.0-only
"""The check that shows a known bug, and how a failed test is told apart from it.

A test tied to a known bug (known_bugs.KNOWN_BUGS) declares which of its checks shows the
bug: only an AssertionError raised inside `bug_check` is that bug. Everything before it is a
precondition: a failed setup step or an environment limit says nothing about the bug, so it
must never be reported as the bug (the kernel's own selftests keep the same line: setup errors
are ksft_exit_fail_msg / ksft_test_result_skip, only the checked behaviour is the test).

    with bug_check("hugetlb-unshare"):
        assert region_wp(region) == [True], "uffd-wp bit lost when the page was unshared"

The mark travels on the exception object itself, so the assertion's own message, traceback and
pytest's rewriting stay exactly as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

MARK = "uffdwp_known_bug"  # attribute set on an AssertionError raised inside a bug check

Failure = Literal["bug-check", "assertion", "exception"]


@contextmanager
def bug_check(key: str | None) -> Iterator[None]:
    """Assertions failing inside this block show known bug *key* (no-op for key None)."""
    try:
        yield
    except AssertionError as exc:
        if key and not hasattr(exc, MARK):
            setattr(exc, MARK, key)
        raise


def failure_kind(exc: BaseException) -> Failure:
    """What kind of failure *exc* is: the bug's own check, another check, or an exception."""
    if getattr(exc, MARK, None):
        return "bug-check"
    if isinstance(exc, AssertionError):
        return "assertion"
    return "exception"


def checked_bug(exc: BaseException) -> str | None:
    """The known-bug key whose check raised *exc*, if any."""
    return getattr(exc, MARK, None)
