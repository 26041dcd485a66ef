"""kcidb.json: the run as KCIDB I/O data (schema v4.3, kernelci/kcidb-io), ready for kcidb-submit.

One checkout and one build stand for the running kernel (we test a kernel we did not build:
both carry its release string), and one test object per test case. KCIDB forbids nulls, so
absent values are left out rather than written as null.
"""

from __future__ import annotations

import re

ORIGIN = "uffdwp"
VERSION = {"major": 4, "minor": 3}
STATUS = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP", "error": "ERROR", "known-bug": "FAIL"}


def _component(text: str) -> str:
    """A test path component: KCIDB allows [.a-zA-Z0-9_-] and dots separate components."""
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", text).strip("_") or "_"


def kcidb_path(nodeid: str) -> str:
    """'suites/test_wp.py::test_x[anon]' -> 'uffdwp.test_wp.test_x.anon'."""
    path, _, rest = nodeid.partition("::")
    parts = [ORIGIN, _component(path.rsplit("/", 1)[-1].removesuffix(".py"))]
    if rest:
        func, _, params = rest.partition("[")
        parts += [_component(p) for p in func.split("::")]
        if params:
            parts.append(_component(params.removesuffix("]")))
    return ".".join(parts)


def _id(text: str) -> str:
    return f"{ORIGIN}:" + re.sub(r"[^A-Za-z0-9._:+-]+", "_", text)


def _no_nulls(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None and v != ""}


def render(results: dict, run: dict | None = None, allow_known_bugs: bool = False) -> dict:
    run = run or {}
    k = results["kernel"]
    release = k.get("release") or "unknown"
    run_id = _id(f"{release}-{run.get('run_id') or run.get('started') or 'run'}")
    checkout = _no_nulls({
        "id": run_id, "origin": ORIGIN, "comment": f"Linux {release} (running kernel)",
        "start_time": run.get("started"), "valid": True,
        "misc": {"kernel_release": release, "kernel_version": k.get("version", "")}})
    api = results.get("api") or {}
    build = _no_nulls({
        "id": run_id, "checkout_id": run_id, "origin": ORIGIN,
        "architecture": k.get("machine"), "comment": release, "start_time": run.get("started"),
        "valid": True,
        "misc": _no_nulls({"kernel_release": release,
                           "uffd_features": api.get("features"),
                           "uffd_feature_names": api.get("feature_names"),
                           "uffd_ioctls": api.get("ioctls")})})
    tests = []
    for n, t in enumerate(results["tests"], start=1):
        misc = _no_nulls({"nodeid": t["nodeid"], "verdict": t["verdict"],
                          "reason": t.get("reason"), "memtype": t.get("memtype")})
        if t.get("bug"):
            misc["known_bug"] = _no_nulls(dict(t["bug"]))
        tests.append(_no_nulls({
            "id": f"{run_id}:{n}", "build_id": run_id, "origin": ORIGIN,
            "path": kcidb_path(t["nodeid"]), "status": STATUS.get(t["verdict"], "ERROR"),
            # A known bug on a kernel without the fix: reported, not alerted on, when allowed.
            "waived": bool(t["verdict"] == "known-bug" and allow_known_bugs),
            "duration": float(t.get("duration") or 0.0),
            "comment": t["nodeid"],
            "log_excerpt": (t.get("reason") or "")[:16384],
            "misc": misc}))
    return {"version": VERSION, "checkouts": [checkout], "builds": [build], "tests": tests}
