# SPDX-License-Identifier: GPL-2.0-only
"""A test's precondition: what must have happened for its checks to say anything.

A race test whose race window was never exercised, or a snapshot test whose writers never
faulted, has tested nothing: that is not a pass, and never a failure or a known bug (a slow or
emulated machine may simply not get there). It is a skip that names what was not met:

    require(cycles > 5 and faults > 0, "race window not exercised", f"{cycles} cycles")

and a test that can try again does so a bounded number of times before skipping:

    retry(attempt, tries=3, budget_s=40)   # attempt() calls require(...)

The skip reason starts with PREFIX, by which reports group such skips under their own cause
(runner/skips.py) and the verdict stays "skip" whatever bug the test is tied to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

import pytest

PREFIX = "precondition not met: "
T = TypeVar("T")


def reason(what: str, detail: str = "") -> str:
    """The skip reason of an unmet precondition: its name first, so identical causes group."""
    return f"{PREFIX}{what}" + (f" ({detail})" if detail else "")


MARK = "uffdwp_precondition"  # (what, detail) on the skip exception of an unmet precondition


def skip(what: str, detail: str = "") -> NoReturn:
    """Skip the test (or this attempt of it, under `retry`), naming the unmet *what*: a plain
    pytest skip (reported as pytest reports any), marked so that `retry` knows it."""
    exc = pytest.skip.Exception(reason(what, detail))
    setattr(exc, MARK, (what, detail))
    raise exc


def require(met: bool, what: str, detail: str = "") -> None:
    """`skip` unless *met*."""
    if not met:
        skip(what, detail)


def unmet(exc: BaseException) -> tuple[str, str] | None:
    """(what, detail) of an unmet precondition's skip, None for any other exception."""
    return getattr(exc, MARK, None)


def retry(attempt: Callable[[], T], *, tries: int = 3, budget_s: float | None = None) -> T:
    """attempt()'s result, trying again while it raises Unmet: at most *tries* times, and no
    new attempt that would (at the longest attempt's pace) end past *budget_s* seconds. Then
    the test is skipped naming the precondition and how many attempts missed it. Any other
    outcome of an attempt (a failed check, an error, another skip) ends it at once."""
    if tries < 1:
        raise ValueError(f"tries must be >= 1, not {tries}")
    start = time.monotonic()
    longest, n = 0.0, 0
    while True:
        began, n = time.monotonic(), n + 1
        try:
            return attempt()
        except pytest.skip.Exception as exc:
            missed = unmet(exc)
            if missed is None:  # another skip (memory unavailable, ...): no use trying again
                raise
        longest = max(longest, time.monotonic() - began)
        if n >= tries or (budget_s is not None
                          and time.monotonic() - start + longest > budget_s):
            break
    what, detail = missed
    skip(what, f"{n} attempt{'s' * (n > 1)}" + (f", last: {detail}" if detail else ""))
