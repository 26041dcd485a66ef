# SPDX-License-Identifier: GPL-2.0-only
"""kcidb.json: the run as KCIDB I/O data (schema v5.3, kernelci/kcidb-io), ready for kcidb-submit.

- One checkout and one build stand for the kernel tested (we test kernels we did not build): the
  checkout carries the tree, commit and repository where given (`uffdwp run --kcidb-tree ...`),
  and a distribution kernel's package and version; `--kcidb-checkout-id`/`--kcidb-build-id`
  attach the tests to objects another CI already submitted instead.
- One test per test case, its path in KernelCI's dotted style `uffd.wp.<area>.<test>[.<variant>]
  .<memtype>`, with the environment it ran in (machine, kernel, accel).
- Known bugs are KCIDB issues (the fix commit is the issue's report URL, the tested code its
  culprit), and each test that reproduced one, or checked for it and found it absent, an incident.
  A known bug is a FAIL: the kernel has the bug; the incident is what marks it as known.
- 64-bit masks are hex strings (JavaScript's JSON.parse rounds integers above 2^53).
KCIDB forbids nulls: absent values are left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import tables

ORIGIN = "uffdwp"
VERSION = {"major": 5, "minor": 3}
PATH_ROOT = "uffd.wp"
STATUS = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP", "error": "ERROR", "known-bug": "FAIL"}
ISSUE_VERSION = 1  # bump when what an issue says (title, fix) changes
LOG_LIMIT = 16384


@dataclass(frozen=True)
class Options:
    """What the command line adds: objects to attach to, and the checkout's source."""

    checkout_id: str = ""  # an existing checkout: ours is not written, our build points there
    build_id: str = ""  # an existing build: neither checkout nor build is written
    tree_name: str = ""
    git_url: str = ""
    git_commit: str = ""  # full 40-hex hash
    git_commit_name: str = ""
    artifacts_url: str = ""  # where the report directory is published (log and file URLs)


def _component(text: str) -> str:
    """A test path component: KCIDB allows [a-zA-Z0-9_-]; dots separate components."""
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", text).strip("_") or "_"


def kcidb_path(nodeid: str, memtype: str | None = None) -> str:
    """'suites/test_wp.py::test_close_reset[anon]' -> 'uffd.wp.wp.close_reset.anon';
    'suites/test_wp.py::test_sizes[shmem-private-4k]' -> 'uffd.wp.wp.sizes.4k.shmem-private'."""
    path, _, rest = nodeid.partition("::")
    area = path.rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")
    parts = [PATH_ROOT, _component(area)]
    if rest:
        func, _, params = rest.partition("[")
        parts += [_component(p.removeprefix("test_").removeprefix("Test")) for p in
                  func.split("::")]
        params = params.removesuffix("]")
        rest = tables.without_memtype(params, memtype) if params else None
        if rest is None:
            parts += [_component(params)] if params else []
        else:
            parts += [_component(rest)] if rest else []
            parts.append(_component(memtype or ""))
    return ".".join(parts)


def _id(*parts: str) -> str:
    return ORIGIN + ":" + ":".join(re.sub(r"[^A-Za-z0-9._+-]+", "_", p) for p in parts if p)


def _clean(obj):
    """Drop None and empty values, recursively: KCIDB forbids nulls."""
    if isinstance(obj, dict):
        out = {k: _clean(v) for k, v in obj.items()}
        return {k: v for k, v in out.items() if v is not None and v != "" and v != {}
                and v != []}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _hex(value) -> str | None:
    return None if value is None else f"{int(value):#x}"


def _checkout(release: str, k: dict, run: dict, opts: Options, checkout_id: str) -> dict:
    pkg = (run.get("context") or {}).get("package") or {}
    if pkg:
        comment = (f"{pkg['distro'].capitalize()} {pkg['package']} {pkg['package_version']} "
                   f"(upstream {pkg['upstream']})")
    else:
        comment = f"Linux {release}"
    return {
        "id": checkout_id, "origin": ORIGIN,
        "tree_name": opts.tree_name or pkg.get("distro"),
        "git_repository_url": opts.git_url or None,
        "git_commit_hash": opts.git_commit or None,
        "git_commit_name": opts.git_commit_name or None,
        "comment": comment, "start_time": run.get("started"), "valid": True,
        "misc": {"kernel_release": release, "kernel_version": k.get("version"),
                 "package": pkg.get("package"), "package_version": pkg.get("package_version"),
                 "upstream_version": pkg.get("upstream")}}


def _environment(k: dict, run: dict) -> dict:
    ctx = run.get("context") or {}
    accel = ctx.get("accel") or "unknown"
    where = {"tcg": "a QEMU guest (TCG)", "kvm": "a KVM guest", "none": "bare metal"}.get(
        accel, "a machine of unknown kind")
    return {"comment": f"{k.get('machine', '?')} {k.get('release', '?')} on {where}",
            "misc": {"machine": k.get("machine"), "kernel_release": k.get("release"),
                     "accel": accel, "accel_evidence": ctx.get("accel_evidence"),
                     "hostname": run.get("hostname")}}


def _issue(fix: tables.Fix) -> dict:
    return {"id": _id("known-bug", fix.key), "version": ISSUE_VERSION, "origin": ORIGIN,
            "report_url": fix.url, "report_subject": fix.title,
            "culprit": {"code": True, "tool": False, "harness": False},
            "comment": f"fixed by {fix.describe()}",
            "misc": {"fix_commit": fix.commit, "fixed_in": fix.fixed_in,
                     "backports": list(fix.backports)}}


def render(results: dict, run: dict | None = None, opts: Options | None = None) -> dict:
    run, opts = run or {}, opts or Options()
    k = results["kernel"]
    release = k.get("release") or "unknown"
    pkg = (run.get("context") or {}).get("package") or {}
    source = opts.git_commit or pkg.get("package_version") or k.get("version") or ""
    checkout_id = opts.checkout_id or _id("checkout", release, source)
    build_id = opts.build_id or _id("build", release, source)
    run_id = _id(release, run.get("run_id") or run.get("started") or "run")
    base = opts.artifacts_url.rstrip("/")
    doc: dict = {"version": VERSION, "checkouts": [], "builds": [], "tests": [], "issues": [],
                 "incidents": []}
    if not opts.checkout_id and not opts.build_id:
        doc["checkouts"].append(_checkout(release, k, run, opts, checkout_id))
    if not opts.build_id:
        api = results.get("api") or {}
        doc["builds"].append({
            "id": build_id, "checkout_id": checkout_id, "origin": ORIGIN,
            "architecture": k.get("machine"), "comment": f"{release} ({k.get('version', '')})",
            "status": "PASS",
            "output_files": [{"name": n, "url": f"{base}/{n}"} for n in
                             ("results.json", "report.html", "junit.xml", "results.ktap")]
            if base else None,
            "misc": {"kernel_release": release, "uffd_features": _hex(api.get("features")),
                     "uffd_feature_names": api.get("feature_names"),
                     "uffd_ioctls": _hex(api.get("ioctls"))}})
    environment = _environment(k, run)
    issues: dict[str, tables.Fix] = {}
    paths: set[str] = set()
    shown = {f.key for t in results["tests"] if t["verdict"] in ("known-bug", "fail")
             for f in [tables.fix_of(t.get("bug"))] if f is not None}
    for n, t in enumerate(results["tests"], start=1):
        test_id = f"{run_id}:{n}"
        path = kcidb_path(t["nodeid"], t.get("memtype"))
        if path in paths:  # variants that differ only in where the memory type sits
            path = kcidb_path(t["nodeid"])
        paths.add(path)
        fix = tables.fix_of(t.get("bug"))
        reason = t.get("reason") or ""
        if fix is not None and t["verdict"] in ("known-bug", "fail"):
            reason = tables.bug_message(t)
        doc["tests"].append({
            "id": test_id, "build_id": build_id, "origin": ORIGIN,
            "path": path,
            "status": STATUS.get(t["verdict"], "ERROR"), "environment": environment,
            "duration": float(t.get("duration") or 0.0), "comment": t["nodeid"],
            "log_url": f"{base}/pytest.log" if base else None,
            "log_excerpt": reason[:LOG_LIMIT],
            "misc": {"nodeid": t["nodeid"], "verdict": tables.kind(t), "memtype": t.get("memtype"),
                     "known_bug": fix.key if fix else None}})
        present = t["verdict"] in ("known-bug", "fail")
        # An absent incident only where no test of this build showed the bug: a variant the bug
        # does not touch (hugetlb where only hugetlb-private has it) says nothing of the build.
        if fix is None or not (present or (t["verdict"] == "pass" and fix.key not in shown)):
            continue
        issues.setdefault(fix.key, fix)
        doc["incidents"].append({
            "id": _id("incident", test_id.split(":", 1)[1]), "origin": ORIGIN,
            "issue_id": _id("known-bug", fix.key), "issue_version": ISSUE_VERSION,
            "build_id": build_id if present else None, "test_id": test_id, "present": present,
            "comment": (("regression: " if tables.is_regression(t) else "known bug present: ")
                        if present else "checked, absent: ") + fix.describe()})
    doc["issues"] = [_issue(fix) for fix in issues.values()]
    return _clean(doc)
