# SPDX-License-Identifier: GPL-2.0-only
"""The pytest plugin of `uffdwp run`, driven through session.py on a tiny fake suite, with and
without pytest-xdist; pytest's junit.xml of the same run is parsed back. No kernel needed."""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from uffdwp.runner import session

FAKE_SUITE = '''
import os, signal
import pytest

@pytest.fixture
def wp_props(request):
    request.node.user_properties.append(("memtype", "anon"))
    request.node.user_properties.append(("bug", "close-reset"))

@pytest.fixture
def broken():
    raise OSError("no memory for you")

@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("cleanup failed")

def test_pass():
    pass

def test_fail(wp_props):
    assert 1 == 2, "page still writable"

def test_skip():
    pytest.skip("feature WP_UNPOPULATED (mainline 6.4) absent on this kernel")

def test_error(broken):
    pass

def test_teardown_error(bad_teardown):
    pass

@pytest.mark.xfail(reason="expected", strict=True)
def test_xfail():
    assert 0

@pytest.mark.parametrize("memtype", ["anon", "shmem"])
def test_param(memtype):
    pass
'''

CRASH = '''
import os, signal

def test_crash():
    os.kill(os.getpid(), signal.SIGKILL)
'''

EXPECTED = {
    "test_fake.py::test_pass": "passed",
    "test_fake.py::test_fail": "failed",
    "test_fake.py::test_skip": "skipped",
    "test_fake.py::test_error": "error",
    "test_fake.py::test_teardown_error": "error",
    "test_fake.py::test_xfail": "xfailed",
    "test_fake.py::test_param[anon]": "passed",
    "test_fake.py::test_param[shmem]": "passed",
}


def _run(tmp_path: Path, jobs: str, *files: str, **kw) -> tuple[list[dict], Path, int]:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_fake.py").write_text(textwrap.dedent(FAKE_SUITE))
    for name in files:
        (suite / name).write_text(textwrap.dedent(CRASH))
    events, junit = tmp_path / "events.jsonl", tmp_path / "junit.xml"
    cmd = session.pytest_command(suite, events, junit=junit, jobs=jobs, **kw)
    proc = session.start(cmd, tmp_path / "pytest.log")
    out = list(session.follow(proc, events, poll=0.05))
    return out, junit, proc.wait()


def _tests(events: list[dict]) -> dict[str, dict]:
    return {e["nodeid"]: e for e in events if e["event"] == "test"}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_events(tmp_path, jobs):
    events, junit, rc = _run(tmp_path, jobs)
    assert rc == 1
    assert events[0]["event"] == "collected"
    assert sorted(events[0]["nodeids"]) == sorted(EXPECTED)
    assert events[-1] == {"event": "finished", "exitstatus": 1}
    tests = _tests(events)
    assert {n: t["outcome"] for n, t in tests.items()} == EXPECTED

    fail = tests["test_fake.py::test_fail"]
    assert fail["memtype"] == "anon" and fail["bug"] == "close-reset"  # travelled from workers
    assert "page still writable" in fail["reason"] and "assert 1 == 2" in fail["message"]
    assert tests["test_fake.py::test_skip"]["reason"] == (
        "feature WP_UNPOPULATED (mainline 6.4) absent on this kernel")
    assert tests["test_fake.py::test_error"]["reason"].startswith("setup: OSError")
    assert tests["test_fake.py::test_teardown_error"]["reason"].startswith("teardown: Runtime")
    assert tests["test_fake.py::test_pass"]["memtype"] is None
    assert all(t["test"] == t["nodeid"].split("::")[1].split("[")[0] for t in tests.values())
    assert all(t["duration"] >= 0 for t in tests.values())

    # pytest's own junit.xml of the same run parses back and agrees
    root = ET.parse(junit).getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert len(cases) == len(EXPECTED)
    assert cases["test_fail"].find("failure") is not None
    assert cases["test_skip"].find("skipped") is not None
    assert cases["test_error"].find("error") is not None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite.get("name") == "uffdwp"


def test_crashed_worker_is_an_error(tmp_path):
    events, _, _ = _run(tmp_path, "2", "test_crash.py")
    crash = _tests(events)["test_crash.py::test_crash"]
    assert crash["outcome"] == "error" and "crashed" in crash["reason"]
    assert len(_tests(events)) == len(EXPECTED) + 1


def test_collection_error_is_reported_and_others_still_run(tmp_path):
    events, _, _ = _run_with_broken(tmp_path)
    tests = _tests(events)
    assert tests["test_broken.py"]["outcome"] == "error"
    assert tests["test_broken.py"]["reason"].startswith("collection failed")
    assert tests["test_fake.py::test_pass"]["outcome"] == "passed"
    assert len(tests) == len(EXPECTED) + 1


def _run_with_broken(tmp_path: Path) -> tuple[list[dict], Path, int]:
    base = tmp_path / "b"
    base.mkdir()
    (base / "suite").mkdir()
    (base / "suite" / "test_broken.py").write_text("def test_x(:\n")
    (base / "suite" / "test_fake.py").write_text(textwrap.dedent(FAKE_SUITE))
    events, junit = base / "events.jsonl", base / "junit.xml"
    cmd = session.pytest_command(base / "suite", events, junit=junit, jobs="2")
    proc = session.start(cmd, base / "pytest.log")
    out = list(session.follow(proc, events, poll=0.05))
    return out, junit, proc.wait()


def test_collect_only_lists_items(tmp_path):
    events, _, rc = _run(tmp_path, "1", collect_only=True)
    assert rc == 0
    items = [e for e in events if e["event"] == "item"]
    assert sorted(e["nodeid"] for e in items) == sorted(EXPECTED)
    assert not _tests(events)
