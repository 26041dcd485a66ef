# SPDX-License-Identifier: GPL-2.0-only
"""pytest plugin of `uffdwp run`: one JSON line per finished test, appended to --uffdwp-events.

Loaded with `-p uffdwp.runner.plugin`. Only the controlling process writes: under pytest-xdist
the workers' reports reach the controller's pytest_runtest_logreport (user_properties travel
with them), so one writer sees every test, and a crashed worker's test arrives as a report
with when="???". Events:

  {"event": "collected", "nodeids": [...]}                  once, before the first test
  {"event": "item", "nodeid", "test", "memtype", "bug"}     per item, in --collect-only runs
  {"event": "test", "nodeid", "test", "memtype", "bug", "failure", "outcome", "reason",
   "message", "duration"}                                   per finished test
  {"event": "finished", "exitstatus": int}
Outcomes: passed | failed | skipped | error | xfailed | xpassed (verdicts.classify reads them).
"failure" says what failed in a failed test (bugcheck.failure_kind: "bug-check" | "assertion" |
"exception"), null otherwise: it is read from the exception in the process that ran the test,
so this plugin's makereport hook runs in xdist workers too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

import pytest

from . import watchdog
from .bugcheck import checked_bug, failure_kind

MESSAGE_LIMIT = 8000  # characters of a failure's traceback kept for the reports
REASON_LIMIT = 500  # the one-line summary that goes into results.json


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("uffdwp")
    group.addoption("--uffdwp-events", metavar="PATH", default=None,
                    help="append one JSON line per finished test to PATH (uffdwp run)")
    group.addoption("--uffdwp-watchdog", metavar="DIR", default=None,
                    help="end a test that outlives its timeout from outside, keeping state in "
                         "DIR (uffdwp run; runner/watchdog.py)")
    group.addoption("--uffdwp-bugs", metavar="KEYS", default=None,
                    help="run only the tests that reproduce a known bug: 'all', or keys of "
                         "uffdwp.known_bugs.KNOWN_BUGS separated by commas")


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("uffdwp_events")
    watch = config.getoption("uffdwp_watchdog")
    worker = hasattr(config, "workerinput")
    distributed = not worker and getattr(config.option, "dist", "no") != "no"
    dog = None
    if watch and distributed:
        dog = watchdog.Watchdog(Path(watch))
        dog.start()
        config.add_cleanup(dog.stop)
    elif watch:  # this process runs the tests
        beacon = watchdog.Beacon(Path(watch), self_kill=not worker)
        config.pluginmanager.register(beacon, "uffdwp-beacon")
    if path and not worker:  # xdist workers report to the controller
        config.pluginmanager.register(Recorder(config, path, dog), "uffdwp-recorder")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Record what failed in a test's call, while the exception object still exists."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and call.excinfo is not None:
        props = [("failure", failure_kind(call.excinfo.value))]
        if checked_bug(call.excinfo.value):  # of a test showing several: the one that failed
            props.append(("bug", checked_bug(call.excinfo.value)))
        item.user_properties.extend(props)  # the teardown report, which _finish reads, copies it
        report.user_properties.extend(props)


def function_name(nodeid: str) -> str:
    """'suites/test_wp.py::test_x[anon]' -> 'test_x'; a file's nodeid -> its module name."""
    tail = nodeid.rsplit("::", 1)[-1] if "::" in nodeid else os.path.basename(nodeid)
    return tail.split("[", 1)[0].removesuffix(".py")


def _properties(report: Any) -> dict[str, str]:
    # Tuples in-process, 2-lists after xdist's serialization.
    return {str(p[0]): p[1] for p in getattr(report, "user_properties", None) or []
            if len(p) == 2}


def _skip_reason(report: Any) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(getattr(report, "longreprtext", "") or longrepr or "")
    return reason.removeprefix("Skipped: ")


def _crash_message(report: Any) -> str:
    """The one-line summary of a failure: the exception line, as pytest's short summary."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        # Its first line: assertion rewriting appends "+ where ..." lines (kept in "message").
        lines = [ln.strip() for ln in str(crash.message).splitlines() if ln.strip()]
    else:
        lines = [ln.strip() for ln in str(getattr(report, "longreprtext", "") or report.longrepr
                                          or "").splitlines() if ln.strip()][-1:]
    line = lines[0] if lines else "failed"
    return line if len(line) <= REASON_LIMIT else line[: REASON_LIMIT - 1] + "…"


def _text(report: Any) -> str:
    text = str(getattr(report, "longreprtext", "") or "")
    return text if len(text) <= MESSAGE_LIMIT else "…" + text[-MESSAGE_LIMIT:]


class Recorder:
    def __init__(self, config: pytest.Config, path: str,
                 dog: watchdog.Watchdog | None = None) -> None:
        self.config = config
        self._watchdog = dog
        # Line-buffered append: the parent tails this file while pytest runs.
        self._out: IO[str] = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self._collected = False
        self._partial: dict[str, dict] = {}
        self._collect_errors: set[str] = set()

    def emit(self, event: str, **fields: Any) -> None:
        self._out.write(json.dumps({"event": event, **fields}) + "\n")

    # --- collection ----------------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)  # after suites/conftest.py added its user_properties
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.config.pluginmanager.getplugin("dsession") is not None:
            return  # distributed: the workers collect (pytest_xdist_node_collection_finished)
        self._announce([item.nodeid for item in session.items])
        if self.config.option.collectonly:
            for item in session.items:
                props = dict(item.user_properties)
                self.emit("item", nodeid=item.nodeid, test=function_name(item.nodeid),
                          memtype=props.get("memtype") or None, bug=props.get("bug"))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self._announce(list(ids))

    def _announce(self, nodeids: list[str]) -> None:
        if not self._collected:
            self._collected = True
            self.emit("collected", nodeids=nodeids)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed and report.nodeid not in self._collect_errors:
            self._collect_errors.add(report.nodeid)
            self.emit("test", nodeid=report.nodeid, test=function_name(report.nodeid), memtype=None,
                      bug=None, failure=None, outcome="error",
                      reason=f"collection failed: {_crash_message(report)}",
                      message=_text(report), duration=0.0)

    # --- tests ---------------------------------------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        state = self._partial.setdefault(report.nodeid, {
            "outcome": "passed", "reason": "", "message": "", "duration": 0.0})
        state["duration"] += float(getattr(report, "duration", 0.0) or 0.0)
        if report.when not in ("setup", "call", "teardown"):
            # xdist's report for an item whose worker crashed: there is no teardown to wait for.
            why = self._watchdog.crash_reason(report.nodeid) if self._watchdog else None
            state.update(outcome="error", reason=why or _crash_message(report),
                         message=_text(report))
            self._finish(report)
            return
        self._merge(state, report)
        if report.when == "teardown":
            self._finish(report)

    @staticmethod
    def _merge(state: dict, report: pytest.TestReport) -> None:
        wasxfail = getattr(report, "wasxfail", None)
        if report.when == "setup":
            if report.skipped:
                state.update(outcome="skipped", reason=_skip_reason(report))
            elif report.failed:
                state.update(outcome="error", reason=f"setup: {_crash_message(report)}",
                             message=_text(report))
        elif report.when == "call":
            if report.skipped and wasxfail is not None:
                state.update(outcome="xfailed", reason=str(wasxfail))
            elif report.skipped:
                state.update(outcome="skipped", reason=_skip_reason(report))
            elif report.failed:
                state.update(outcome="failed", reason=_crash_message(report),
                             message=_text(report))
            elif wasxfail is not None:
                state.update(outcome="xpassed", reason=str(wasxfail))
        elif report.failed:  # teardown
            if state["outcome"] in ("passed", "skipped", "xpassed"):
                state.update(outcome="error", reason=f"teardown: {_crash_message(report)}",
                             message=_text(report))
            else:  # keep the test's own failure; note the teardown's
                state["message"] += "\n\n--- teardown ---\n" + _text(report)

    def _finish(self, report: pytest.TestReport) -> None:
        state = self._partial.pop(report.nodeid)
        props = _properties(report)
        self.emit("test", nodeid=report.nodeid, test=function_name(report.nodeid),
                  memtype=props.get("memtype") or None, bug=props.get("bug"),
                  bugs=str(props.get("bugs") or "").split() or None,
                  failure=props.get("failure") if state["outcome"] == "failed" else None,
                  outcome=state["outcome"], reason=state["reason"], message=state["message"],
                  duration=round(state["duration"], 4))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.emit("finished", exitstatus=int(exitstatus))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self._out.close()


# --- --uffdwp-bugs: only the tests that reproduce known bugs -----------------------------------

def bug_selection(value: str) -> set[str] | None:
    """--uffdwp-bugs value -> the keys it selects (None: all known bugs). Raises ValueError
    naming an unknown key."""
    from ..known_bugs import KNOWN_BUGS

    keys = {k.strip() for k in value.split(",") if k.strip()}
    if not keys or keys == {"all"}:
        return None
    unknown = sorted(keys - set(KNOWN_BUGS))
    if unknown:
        raise ValueError(f"unknown known-bug key(s) {', '.join(unknown)}; "
                         f"known: {', '.join(KNOWN_BUGS)}")
    return keys


@pytest.hookimpl(trylast=True)  # after suites/conftest.py put each item's bug in user_properties
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    value = config.getoption("uffdwp_bugs")
    if value is None:
        return
    try:
        keys = bug_selection(value)
    except ValueError as e:
        raise pytest.UsageError(f"--uffdwp-bugs: {e}") from None
    keep, drop = [], []
    for item in items:
        props = dict(item.user_properties)
        bugs = set(str(props.get("bugs") or props.get("bug") or "").split())
        (keep if bugs and (keys is None or bugs & keys) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep

