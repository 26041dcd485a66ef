"""From a test's outcome, its known-bug key and the kernel, the verdict a report shows.

Pure logic: no pytest, no kernel access. A failure of a test that reproduces a known bug is a
"known-bug" on a kernel that predates the fix (or where we cannot tell), and a "fail" — a
regression — on a kernel that has it.
"""

from __future__ import annotations

from typing import Literal

from ..kernel_facts import KNOWN_BUGS, KnownBug
from ..kernel_version import KernelVersion, release_number

VERDICTS = ("pass", "fail", "skip", "known-bug", "error")
Verdict = Literal["pass", "fail", "skip", "known-bug", "error"]
FixStatus = Literal["fixed", "unfixed", "unknown"]

# Outcomes the plugin records (pytest's, plus "error" for setup/teardown/collection failures).
OUTCOMES = ("passed", "failed", "skipped", "error", "xfailed", "xpassed")

# kselftest exit codes (tools/testing/selftests/kselftest.h)
KSFT_PASS, KSFT_FAIL, KSFT_SKIP = 0, 1, 4


def fix_status(bug: KnownBug, kv: KernelVersion | None) -> FixStatus:
    """Whether the kernel has the fix of *bug*: mainline release, then the stable backports."""
    fixed = release_number(bug.fixed_in)
    if kv is None or fixed is None:
        return "unknown"
    here = (kv.major, kv.minor)
    if here > fixed[:2]:
        return "fixed"
    if here == fixed[:2]:
        # An -rc of the fixing release may or may not have the fix yet.
        return "unknown" if kv.rc else "fixed"
    for port in bug.backports:
        series = release_number(port)
        if series is None or series[:2] != here:
            continue
        if series[2] is None or kv.sublevel is None:
            return "unknown"  # "6.1.y" (sublevel unrecorded) or a distro release hiding it
        return "fixed" if kv.sublevel >= series[2] else "unfixed"
    return "unfixed"


def bug_info(key: str | None) -> dict | None:
    """The results.json "bug" object of a known-bug key (None for none or an unknown key)."""
    bug = KNOWN_BUGS.get(key) if key else None
    if bug is None:
        return None
    return {"key": bug.key, "commit": bug.commit, "fixed_in": bug.fixed_in}


def _first_line(text: str, limit: int = 200) -> str:
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def classify(outcome: str, reason: str, bug_key: str | None,
             kv: KernelVersion | None) -> tuple[Verdict, str]:
    """(verdict, reason) of one test. *reason* is the skip reason or the failure summary."""
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
        status = fix_status(bug, kv)
        msg = _first_line(reason)
        if status == "fixed":
            return "fail", (f"regression: known bug {bug.commit} reproduced although this kernel "
                            f"({kv}) should have the fix (fixed in {bug.fixed_in}"
                            + (f", backported to {', '.join(bug.backports)}"
                               if bug.backports else "") + f"): {msg}")
        note = "" if status == "unfixed" else " [fix status unknown on this kernel]"
        return "known-bug", f"{bug.describe()}{note}" + (f" — {msg}" if msg else "")
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
