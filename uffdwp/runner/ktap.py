# SPDX-License-Identifier: GPL-2.0-only
"""results.ktap: KTAP version 1 (Documentation/dev-tools/ktap.rst) in kselftest's conventions
(tools/testing/selftests/kselftest.h), as kselftest tooling and kunit_parser.py read it.

One top-level test per test function; a parametrized function (over memory types or anything
else) gets one subtest per parameter set, indented two spaces, its result the worst of them.

  pass       ok N name
  skip       ok N name # SKIP reason
  known-bug  ok N name # XFAIL reason     (kselftest's expected failure: the verdict, not the
                                           exit status, which --allow-known-bugs decides)
  fail       not ok N name                (the reason as a diagnostic line before it)
  error      not ok N name # error reason

The plan follows the version line; the last line is kselftest's
"# Totals: pass:P fail:F xfail:X xpass:0 skip:S error:E", counting test cases (the leaves).
"""

from __future__ import annotations

import re
from collections import OrderedDict

from . import tables

SEVERITY = {"skip": 0, "pass": 1, "known-bug": 2, "error": 3, "fail": 4}


def _name(text: str) -> str:
    """A test description: no '#', which would start a directive, and no whitespace."""
    return re.sub(r"\s+", "_", text.replace("#", "_")).strip("_") or "unnamed"


def _oneline(text: str) -> str:
    return " ".join(str(text or "").split())


def _split(nodeid: str) -> tuple[str, str | None]:
    """('test_wp.test_x', 'anon') from 'suites/test_wp.py::test_x[anon]'."""
    path, _, rest = nodeid.partition("::")
    module = path.rsplit("/", 1)[-1].removesuffix(".py")
    if not rest:
        return module, None
    func, _, params = rest.partition("[")
    return f"{module}.{func.replace('::', '.')}", params[:-1] if params else None


def _result(number: int, name: str, verdict: str, reason: str, indent: str) -> list[str]:
    reason = _oneline(reason)
    if verdict == "pass":
        return [f"{indent}ok {number} {name}"]
    if verdict == "skip":
        return [f"{indent}ok {number} {name} # SKIP {reason}".rstrip()]
    if verdict == "known-bug":
        return [f"{indent}ok {number} {name} # XFAIL {reason}".rstrip()]
    if verdict == "error":
        return [f"{indent}not ok {number} {name} # error {reason}".rstrip()]
    return ([f"{indent}# {reason}"] if reason else []) + [f"{indent}not ok {number} {name}"]


def _reason(test: dict) -> str:
    return tables.bug_message(test) if test.get("bug") and test["verdict"] != "pass" \
        else test.get("reason", "")


def _worst(verdicts: list[str]) -> str:
    if all(v == "skip" for v in verdicts):
        return "skip"
    return max(verdicts, key=lambda v: SEVERITY.get(v, 3))


def totals(summary: dict[str, int]) -> str:
    return (f"# Totals: pass:{summary.get('pass', 0)} fail:{summary.get('fail', 0)} "
            f"xfail:{summary.get('known-bug', 0)} xpass:0 skip:{summary.get('skip', 0)} "
            f"error:{summary.get('error', 0)}")


def render(results: dict) -> str:
    groups: OrderedDict[str, list[tuple[str | None, dict]]] = OrderedDict()
    for t in results["tests"]:
        name, params = _split(t["nodeid"])
        groups.setdefault(name, []).append((params, t))
    k = results.get("kernel", {})
    lines = ["KTAP version 1", f"1..{len(groups)}",
             f"# uffdwp on {_oneline(k.get('release', '?'))} {_oneline(k.get('machine', ''))}"]
    for number, (name, cases) in enumerate(groups.items(), start=1):
        if len(cases) == 1 and cases[0][0] is None:
            t = cases[0][1]
            lines += _result(number, _name(name), t["verdict"], _reason(t), "")
            continue
        lines += ["  KTAP version 1", f"  # Subtest: {_name(name)}", f"  1..{len(cases)}"]
        for sub, (params, t) in enumerate(cases, start=1):
            lines += _result(sub, _name(params or "default"), t["verdict"], _reason(t), "  ")
        verdicts = [t["verdict"] for _, t in cases]
        worst = _worst(verdicts)
        counts = ", ".join(f"{v} {verdicts.count(v)}" for v in SEVERITY if v in verdicts)
        reasons = {t.get("reason", "") for _, t in cases}
        reason = reasons.pop() if worst == "skip" and len(reasons) == 1 else counts
        lines += _result(number, _name(name), worst, reason, "")
    lines.append(totals(results.get("summary", {})))
    return "\n".join(lines) + "\n"
