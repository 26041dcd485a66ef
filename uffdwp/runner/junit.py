# SPDX-License-Identifier: GPL-2.0-only
"""junit.xml: one <testsuite> per kernel, named by its release, with the kernel, its features and
the memory types tested as properties, so that files from different machines never look alike.

  pass        <testcase/>
  skip        <skipped type="skip" message="reason"/>
  known bug   allowed:     <skipped type="known-bug" message="known bug: the fix, release">
              not allowed: <failure type="known-bug" message="...">
  regression  <failure type="regression" message="regression: fix ... undone: assertion">
  fail        <failure type="failure" message="assertion">traceback</failure>
  error       <error type="error" message="reason">traceback</error>
"""

from __future__ import annotations

from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

from . import tables

MESSAGE_LIMIT = 2000


def _classname(nodeid: str) -> str:
    """'suites/test_wp.py::TestX::test_y[anon]' -> 'suites.test_wp.TestX' (pytest's own)."""
    path, _, rest = nodeid.partition("::")
    parts = [path.removesuffix(".py").replace("/", ".")]
    parts += rest.split("::")[:-1] if rest else []
    return ".".join(parts)


def _name(nodeid: str) -> str:
    path, _, rest = nodeid.partition("::")
    return rest.split("::")[-1] if rest else path


def _clip(text: str) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _result(test: dict, allow_known_bugs: bool, detail: str):
    kind = tables.kind(test)
    if kind == "pass":
        return None
    if kind == "skip":
        return Skipped(_clip(test.get("reason")), "skip")
    if kind == "known-bug":
        kind_of = Skipped if allow_known_bugs else Failure
        result = kind_of(_clip(tables.bug_message(test)), "known-bug")
    elif kind == "regression":
        result = Failure(_clip(tables.bug_message(test)), "regression")
    elif kind == "fail":
        result = Failure(_clip(test.get("reason")), "failure")
    else:
        result = Error(_clip(test.get("reason")), "error")
    if detail:
        result.text = detail
    return result


def properties(results: dict, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The suite's properties: the kernel, its negotiated features, the memory types tested."""
    k, api = results.get("kernel") or {}, results.get("api") or {}
    memtypes = list(dict.fromkeys(t["memtype"] for t in results["tests"] if t.get("memtype")))
    props = {"kernel.release": k.get("release", ""), "kernel.version": k.get("version", ""),
             "kernel.machine": k.get("machine", ""),
             "uffd.features": f"{api['features']:#x}" if api else "none (no userfaultfd)",
             "uffd.feature_names": " ".join(api.get("feature_names") or []),
             "uffd.ioctls": f"{api['ioctls']:#x}" if api else "",
             "memtypes": " ".join(memtypes)}
    props.update(extra or {})
    return {name: str(value) for name, value in props.items() if value not in ("", None)}


def suite(results: dict, *, allow_known_bugs: bool, details: dict[str, str] | None = None,
          extra: dict[str, str] | None = None, timestamp: str = "",
          hostname: str = "") -> TestSuite:
    details = details or {}
    ts = TestSuite(results["kernel"].get("release") or "unknown-kernel")
    for name, value in properties(results, extra).items():
        ts.add_property(name, value)
    for t in results["tests"]:
        case = TestCase(_name(t["nodeid"]), _classname(t["nodeid"]), float(t.get("duration") or 0))
        result = _result(t, allow_known_bugs, details.get(t["nodeid"], ""))
        if result is not None:
            case.result = [result]
        ts.add_testcase(case)
    ts.update_statistics()
    if timestamp:
        ts.timestamp = timestamp
    if hostname:
        ts.hostname = hostname
    return ts


def run_suite(data: dict, run_info: dict, details: dict[str, str] | None = None):
    """The <testsuite> of one `uffdwp run` (results.json + run.json): for its junit.xml and the
    matrix's."""
    ident = run_info.get("suite") or {}
    pkg = (run_info.get("context") or {}).get("package") or {}
    extra = {"kernel.package": pkg.get("package"), "kernel.package_version":
             pkg.get("package_version"), "accel": (run_info.get("context") or {}).get("accel"),
             "uffdwp.version": ident.get("version"), "uffdwp.commit": ident.get("commit"),
             "allow_known_bugs": str(bool(run_info.get("allow_known_bugs"))).lower(),
             "exit_status": str(data.get("exit_status"))}
    return suite(data, allow_known_bugs=bool(run_info.get("allow_known_bugs")), details=details,
                 extra=extra, timestamp=run_info.get("started", ""),
                 hostname=run_info.get("hostname", ""))


def document(suites: list[TestSuite]) -> JUnitXml:
    xml = JUnitXml("uffdwp")
    for ts in suites:
        xml.add_testsuite(ts)
    xml.update_statistics()
    return xml


def write(path, suites: list[TestSuite]) -> None:
    document(suites).write(str(path), pretty=True)
