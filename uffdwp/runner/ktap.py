"""results.ktap: KTAP version 1 (Documentation/dev-tools/ktap.rst), as kselftest tooling reads it.

One top-level test per test function; a parametrized function (over memory types or anything
else) gets one subtest per parameter set, indented two spaces, its result the worst of them.

  pass       ok N name
  skip       ok N name # SKIP reason
  fail       not ok N name            (the reason as a diagnostic line before it)
  error      not ok N name # ERROR reason
  known-bug  not ok N name # XFAIL reason   ("ok ... # XFAIL", kselftest's expected failure,
                                             when the run allows known bugs)
"""

from __future__ import annotations

import re
from collections import OrderedDict

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


def _result(number: int, name: str, verdict: str, reason: str, allow_known_bugs: bool,
            indent: str) -> list[str]:
    reason = _oneline(reason)
    if verdict == "pass":
        return [f"{indent}ok {number} {name}"]
    if verdict == "skip":
        return [f"{indent}ok {number} {name} # SKIP {reason}".rstrip()]
    if verdict == "known-bug":
        ok = "ok" if allow_known_bugs else "not ok"
        return [f"{indent}{ok} {number} {name} # XFAIL {reason}".rstrip()]
    if verdict == "error":
        return [f"{indent}not ok {number} {name} # ERROR {reason}".rstrip()]
    return ([f"{indent}# {reason}"] if reason else []) + [f"{indent}not ok {number} {name}"]


def _worst(verdicts: list[str]) -> str:
    if all(v == "skip" for v in verdicts):
        return "skip"
    return max(verdicts, key=lambda v: SEVERITY.get(v, 3))


def render(results: dict, allow_known_bugs: bool = False) -> str:
    groups: OrderedDict[str, list[tuple[str | None, dict]]] = OrderedDict()
    for t in results["tests"]:
        name, params = _split(t["nodeid"])
        groups.setdefault(name, []).append((params, t))
    k = results.get("kernel", {})
    lines = ["KTAP version 1",
             f"# uffdwp on {_oneline(k.get('release', '?'))} {_oneline(k.get('machine', ''))}",
             f"1..{len(groups)}"]
    for number, (name, cases) in enumerate(groups.items(), start=1):
        if len(cases) == 1 and cases[0][0] is None:
            t = cases[0][1]
            lines += _result(number, _name(name), t["verdict"], t.get("reason", ""),
                             allow_known_bugs, "")
            continue
        lines += ["  KTAP version 1", f"  # Subtest: {_name(name)}", f"  1..{len(cases)}"]
        for sub, (params, t) in enumerate(cases, start=1):
            lines += _result(sub, _name(params or "default"), t["verdict"],
                             t.get("reason", ""), allow_known_bugs, "  ")
        verdicts = [t["verdict"] for _, t in cases]
        worst = _worst(verdicts)
        counts = ", ".join(f"{v} {verdicts.count(v)}" for v in SEVERITY if v in verdicts)
        reasons = {t.get("reason", "") for _, t in cases}
        reason = reasons.pop() if worst == "skip" and len(reasons) == 1 else counts
        lines += _result(number, _name(name), worst, reason, allow_known_bugs, "")
    s = results.get("summary", {})
    lines.append("# Totals: " + " ".join(f"{v}:{n}" for v, n in s.items()))
    return "\n".join(lines) + "\n"
