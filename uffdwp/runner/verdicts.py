# SPDX-License-Identifier: GPL-2.0-only
"""From a test's outcome, its known-bug key and the kernel, the verdict a report shows.

Pure logic: no pytest, no kernel access. A failure of the check that shows a known bug
(runner/bugcheck.py) is a "known-bug" on a kernel that predates the fix in its own series (or
where we cannot tell), and a "fail" — a regression — on a kernel at or past it. Any other failure
of such a test is not the bug.
"""

from __future__ import annotations

from typing import Literal

from ..kernel_version import KernelVersion, release_number
from ..known_bugs import KNOWN_BUGS, KnownBug

VERDICTS = ("pass", "fail", "skip", "known-bug", "error")
Verdict = Literal["pass", "fail", "skip", "known-bug", "error"]
FixStatus = Literal["fixed", "unfixed", "unknown"]

# Outcomes the plugin records (pytest's, plus "error" for setup/teardown/collection failures).
OUTCOMES = ("passed", "failed", "skipped", "error", "xfailed", "xpassed")

# kselftest exit codes (tools/testing/selftests/kselftest.h)
KSFT_PASS, KSFT_FAIL, KSFT_SKIP = 0, 1, 4


def fix_release(bug: KnownBug, kv: KernelVersion | None) -> str | None:
    """The release that brings *bug*'s fix to *kv*'s series: its stable backport, else the
    mainline release; None where the series never got it (or the kernel is unknown)."""
    if kv is None:
        return None
    fixed = release_number(bug.fixed_in)
    if fixed is not None and kv.series >= fixed[:2]:
        return bug.fixed_in
    port = bug.stable_fix(f"{kv.major}.{kv.minor}")
    return port.release if port else None


def fix_status(bug: KnownBug, kv: KernelVersion | None) -> FixStatus:
    """Whether the kernel has the fix of *bug*, judged in its own series: at or past the mainline
    release that fixed it, or at or past the fix's backport to this stable series. A series
    without a recorded backport does not have it."""
    fixed = release_number(bug.fixed_in)
    if kv is None or fixed is None:
        return "unknown"
    if kv.series > fixed[:2]:
        return "fixed"
    if kv.series == fixed[:2]:
        # An -rc of the fixing release may or may not have the fix yet.
        return "unknown" if kv.rc else "fixed"
    release = fix_release(bug, kv)
    number = release_number(release) if release else None
    if number is None or number[2] is None:
        return "unfixed"
    if kv.sublevel is None:
        return "unknown"  # a distro release string that hides its sublevel
    return "fixed" if kv.sublevel >= number[2] else "unfixed"


def bug_info(key: str | None, kv: KernelVersion | None = None) -> dict | None:
    """The results.json "bug" object of a known-bug key (None for none or an unknown key):
    the fix, its stable backports, and what they mean for this kernel."""
    bug = KNOWN_BUGS.get(key) if key else None
    if bug is None:
        return None
    return {"key": bug.key, "commit": bug.commit, "fixed_in": bug.fixed_in,
            "stable": {f.series: f.release for f in bug.stable},
            "fix_status": fix_status(bug, kv), "fix_release": fix_release(bug, kv)}


def _first_line(text: str, limit: int = 200) -> str:
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _bug_failure(bug: KnownBug, msg: str, kv: KernelVersion | None) -> tuple[Verdict, str]:
    """The verdict of a failure of *bug*'s own check: known bug, or regression past its fix."""
    status = fix_status(bug, kv)
    if status == "fixed":
        return "fail", (f"regression: known bug {bug.commit} reproduced although this kernel "
                        f"({kv}) has the fix of its series ({fix_release(bug, kv)}; fixed in "
                        f"{bug.fixed_in}" + (f", backported to {', '.join(bug.backports)}"
                                             if bug.backports else "") + f"): {msg}")
    note = "" if status == "unfixed" else " [fix status unknown on this kernel]"
    return "known-bug", f"{bug.describe()}{note}" + (f" — {msg}" if msg else "")


def classify(outcome: str, reason: str, bug_key: str | None, kv: KernelVersion | None,
             failure: str | None = None) -> tuple[Verdict, str]:
    """(verdict, reason) of one test. *reason* is the skip reason or the failure summary;
    *failure* what failed (bugcheck.failure_kind). Only a failure of the known bug's own check
    ("bug-check") is that bug: a test tied to a bug that fails elsewhere is an ordinary failure
    (another assertion) or an error (an exception: a precondition the test could not set up)."""
    if outcome == "passed":
        return "pass", ""
    if outcome == "xpassed":
        return "pass", f"passed though marked xfail: {reason}".rstrip(": ")
    if outcome == "skipped":
        return "skip", reason
    if outcome == "xfailed":
        # The suites mark nothing xfail today; an xfail is a failure someone expected.
        return "known-bug", f"expected failure: {reason}".rstrip(": ")
    if outcome == "failed":
        bug = KNOWN_BUGS.get(bug_key) if bug_key else None
        if bug is None:
            return "fail", reason
        msg = _first_line(reason)
        if failure == "bug-check":
            return _bug_failure(bug, msg, kv)
        if failure == "assertion":
            return "fail", f"{msg} (a check other than the one showing known bug {bug.commit})"
        return "error", (f"{msg} (raised outside the check of known bug {bug.commit}: the test "
                         "could not tell whether the bug is there)")
    # "error" and anything unexpected: the test could not tell us about the kernel.
    return "error", reason


def summarize(verdicts: list[str]) -> dict[str, int]:
    summary = dict.fromkeys(VERDICTS, 0)
    for v in verdicts:
        summary[v if v in summary else "error"] += 1
    return summary


def exit_status(summary: dict[str, int], allow_known_bugs: bool = False) -> int:
    """kselftest convention: 0 passed (skips allowed), 1 any failure, 4 nothing but skips.

    A known bug fails the run by default: the kernel under test does have the bug, and a
    conformance run should not report success on it. CI that runs old kernels on purpose (the
    VM matrix) passes --allow-known-bugs, and still fails on regressions and real failures."""
    if summary.get("fail", 0) or summary.get("error", 0):
        return KSFT_FAIL
    if summary.get("known-bug", 0) and not allow_known_bugs:
        return KSFT_FAIL
    ran = sum(n for v, n in summary.items() if v != "skip")
    return KSFT_PASS if ran else KSFT_SKIP
