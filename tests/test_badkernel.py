# SPDX-License-Identifier: GPL-2.0-only
"""The suite against kernels that misbehave (issue 15): each check fails where the kernel bends
the rule it checks, and `uffdwp run` survives a kernel that hangs or crashes its workers.

The misbehaving kernel is tests/shim/badkernel.c, LD_PRELOADed into a child run: it bends what
ioctl() and read() on a userfaultfd return (UFFDWP_BADKERNEL names how). It is never part of a
conformance verdict: only these tests load it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from uffdwp.runner import session
from uffdwp.uffd import supported_features

from .childproc import ROOT, describe, run_python

SHIM_SOURCE = Path(__file__).parent / "shim" / "badkernel.c"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    try:
        supported_features()
    except Exception as exc:
        pytest.skip(f"no userfaultfd here: {exc}")
    out = tmp_path_factory.mktemp("shim") / "badkernel.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(out),
                    str(SHIM_SOURCE), "-ldl"], check=True, capture_output=True, text=True)
    return out


def _env(shim: Path | None, mode: str | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), UFFDWP_PROGRESS="plain")
    env.pop("LD_PRELOAD", None)
    return {**env, **_bent(shim, mode or "")} if shim is not None else env


def _bent(shim: Path, mode: str) -> dict[str, str]:
    return {"LD_PRELOAD": str(shim), "UFFDWP_BADKERNEL": mode}


def suite_verdicts(shim: Path | None, mode: str | None, *selection: str,
                   timeout: float = 120) -> dict[str, dict]:
    """Run the suites' *selection* (node ids) in one pytest child, under the shim's *mode*
    (None: the real kernel); node id -> the runner plugin's event (outcome, reason)."""
    events = Path(os.environ.get("TMPDIR", "/tmp")) / f"badkernel-{os.getpid()}.jsonl"
    events.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "pytest", "-p", session.PLUGIN, f"--uffdwp-events={events}",
            "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:xdist", "-q",
            "-c", str(ROOT / "pytest.ini"), "--rootdir", str(ROOT), *selection]
    try:
        proc = subprocess.run(argv, cwd=ROOT, env=_env(shim, mode), capture_output=True,
                              text=True, timeout=timeout)
        lines = events.read_text().splitlines() if events.exists() else []
    finally:
        events.unlink(missing_ok=True)
    out = {e["nodeid"]: e for e in map(json.loads, lines) if e["event"] == "test"}
    assert out, describe(proc)
    return out


def _outcomes(verdicts: dict[str, dict]) -> dict[str, str]:
    return {n.split("::", 1)[1]: e["outcome"] for n, e in verdicts.items()}


# --- the checks of items 2-4, each failing where the kernel bends its rule ---------------------
API = ("suites/test_api.py::test_advertised_features_known",
       "suites/test_api.py::test_feature_accepted_iff_advertised")


def test_features_consistent_on_this_kernel(shim):
    assert set(_outcomes(suite_verdicts(None, None, *API)).values()) == {"passed"}


def test_unknown_advertised_bit(shim):
    """Bit 40 advertised, refused when asked for: reported as unknown, and a failure."""
    v = suite_verdicts(shim, "extra-bit", *API)
    known, iff = (v[n] for n in API)
    assert known["outcome"] == "skipped" and "bit 40" in known["reason"], known
    assert iff["outcome"] == "failed" and "advertised but refused" in iff["reason"], iff
    assert "BIT(40)" in iff["reason"], iff


def test_dropped_wp_unpopulated(shim):
    """WP_UNPOPULATED no longer advertised (still accepted): a failure, and the probe says the
    advertised set is below what this release has in mainline."""
    iff = suite_verdicts(shim, "no-wp-unpopulated", API[1])[API[1]]
    assert iff["outcome"] == "failed", iff
    assert "not advertised but accepted" in iff["reason"] and "WP_UNPOPULATED" in iff["reason"]
    code = """
        import json
        from uffdwp.probe import probe
        p = probe(with_register=False)
        print(json.dumps([p.below_mainline, p.unknown_feature_bits]))
    """
    here = json.loads(run_python(code).stdout)
    bent = json.loads(run_python(code, env=_bent(shim, "no-wp-unpopulated")).stdout)
    assert "WP_UNPOPULATED" not in here[0]
    assert "WP_UNPOPULATED" in bent[0] and bent[1] == []


COPY = "suites/test_resolve.py::test_copy_wp_dontwake_pending_fault[anon]"


def test_copy_wp_dontwake_that_wakes(shim):
    assert suite_verdicts(None, None, COPY)[COPY]["outcome"] == "passed"
    bent = suite_verdicts(shim, "dontwake-wakes", COPY)[COPY]
    # woken, the writer faulted again at once (WP) before UFFDIO_WAKE: a second message
    assert bent["outcome"] == "failed", bent
    assert "unexpected userfaultfd messages: [PageFault" in bent["reason"], bent


SNAPSHOT = ("suites/test_snapshot.py::test_exec_target",
            "suites/test_snapshot.py::test_abort_closed_pipe",
            "suites/test_snapshot.py::test_population_path[anon]")


def test_snapshot_skips_without_wp(shim):
    """No write-protect at all: the snapshot tests skip naming the feature (they failed with
    SnapshotError before)."""
    v = suite_verdicts(shim, "no-wp", *SNAPSHOT)
    for nodeid in SNAPSHOT:
        assert v[nodeid]["outcome"] == "skipped", v[nodeid]
        assert "PAGEFAULT_FLAG_WP" in v[nodeid]["reason"], v[nodeid]


def test_handler_gives_up_on_a_page_that_keeps_faulting(shim):
    """Unprotect wakes the writer but leaves the page protected: the native handler stops
    resolving it after UFFDWP_MAX_REFAULTS and says so; stop() then releases the writer."""
    code = """
        import time
        from uffdwp import native
        from uffdwp._ffi import lib
        from uffdwp.kernel_facts import Feature, RegisterMode
        from uffdwp.memory import allocate
        from uffdwp.uffd import Userfaultfd
        region = allocate("anon", pages=1)
        region.fill(1)
        uffd = Userfaultfd.create(Feature.PAGEFAULT_FLAG_WP)
        uffd.register(region.address, region.length, RegisterMode.WP)
        uffd.writeprotect(region.address, region.length)
        h = native.FaultHandler(uffd, [(region.address, region.length)])
        import threading
        t = threading.Thread(target=native.store_u64, args=(region.address, 7), daemon=True)
        t.start()
        deadline = time.monotonic() + 10
        while h.stats.gave_up == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        s = h.stats
        print(s.gave_up, s.resolved >= lib.UFFDWP_MAX_REFAULTS - 1, s.last_error)
        h.stop()
        uffd.close()  # the registration goes with it: the store completes
        t.join(5)
        print(t.is_alive())
    """
    proc = run_python(code, env=_bent(shim, "unprotect-wake"), timeout=60)
    assert proc.stdout.split() == ["1", "True", str(-__import__("errno").ELOOP), "False"], \
        describe(proc)


# --- `uffdwp run` on a kernel that hangs or crashes its workers --------------------------------
HANGING_SUITE = '''
import ctypes, os, signal
import pytest
from uffdwp import native
from uffdwp.kernel_facts import Feature, RegisterMode
from uffdwp.memory import allocate
from uffdwp.uffd import Userfaultfd

_keep = []

@pytest.mark.timeout(2)
def test_hangs_in_a_fault():
    """A store on the main thread into a protected page that nobody resolves: what a kernel
    whose unprotect does nothing does to a worker. pytest-timeout cannot end it."""
    region = allocate("anon", pages=1)
    region.fill(1)
    uffd = Userfaultfd.create(Feature.PAGEFAULT_FLAG_WP)
    uffd.register(region.address, region.length, RegisterMode.WP)
    uffd.writeprotect(region.address, region.length)
    _keep.extend([region, uffd])
    native.store_u64(region.address, 2)

def test_segfaults():
    os.kill(os.getpid(), signal.SIGSEGV)

def test_passes():
    pass
'''


def _hanging_suite(tmp_path: Path) -> Path:
    suite = tmp_path / "hang"
    suite.mkdir()
    (suite / "test_hang.py").write_text(textwrap.dedent(HANGING_SUITE))
    return suite


def _uffdwp_run(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "uffdwp", "run", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _left_running(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if marker in ln and "ps -eo" not in ln]


def test_run_survives_a_hang_and_a_crash(shim, tmp_path):
    """The hung test is ended (its worker killed and replaced) and reported as hung in its
    phase with where it stopped; the crashed one as crashed with its signal; the rest runs;
    the report is complete; the whole run within the tests' bounds."""
    report = tmp_path / "report"
    t0 = time.monotonic()
    proc = _uffdwp_run("--suites", str(_hanging_suite(tmp_path)), "-j", "2", "--report",
                       str(report), env=_env(None, None))
    out, _ = proc.communicate(timeout=90)
    seconds = time.monotonic() - t0
    assert proc.returncode == 1, out
    tests = {t["test"]: t for t in json.loads((report / "results.json").read_text())["tests"]}
    hang, segv, ok = tests["test_hangs_in_a_fault"], tests["test_segfaults"], tests["test_passes"]
    assert hang["verdict"] == "error" and hang["reason"].startswith("hung in call"), hang
    assert "test_hang.py:" in hang["reason"] and "in test_hangs_in_a_fault" in hang["reason"]
    assert "kernel wait: handle_userfault" in hang["reason"], hang
    assert segv["verdict"] == "error" and segv["reason"].startswith("crashed (SIGSEGV) in call")
    assert ok["verdict"] == "pass"
    assert seconds < 2 + 2 + 25, f"{seconds:.1f}s"  # bound + grace, start-up and report
    assert not _left_running(str(tmp_path)), _left_running(str(tmp_path))


def test_run_stops_on_sigterm(shim, tmp_path):
    """SIGTERM while a worker is stuck in a fault: everything of the run stopped within 5 s,
    the report written with what finished, the host state its pytest held restored although
    that pytest never left it (killed)."""
    report = tmp_path / "report"
    state = tmp_path / "state"
    state.mkdir()
    # a private state whose restore writes back today's value: nothing changes on the host
    hugepages = Path("/proc/sys/vm/nr_hugepages").read_text().strip()
    env = dict(_env(None, None), UFFDWP_STATE_DIR=str(state), HUGEPAGES=hugepages)
    suite = _hanging_suite(tmp_path)
    (suite / "conftest.py").write_text(textwrap.dedent("""
        import json, os
        from uffdwp import hostsetup

        def pytest_configure(config):  # joins, never leaves
            if not hasattr(config, "workerinput"):
                (hostsetup.STATE_DIR / "state.json").write_text(json.dumps(
                    {"pids": [os.getpid()], "old_hugepages": int(os.environ["HUGEPAGES"])}))
    """))
    proc = _uffdwp_run("--suites", str(suite), "-j", "2", "--report", str(report), env=env)
    deadline = time.monotonic() + 30
    log = report / "pytest.log"
    while "test_hangs_in_a_fault" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the run never started its tests"
        time.sleep(0.1)
    time.sleep(0.5)  # in the fault now (the watchdog would end it at 2+2 s)
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    out, _ = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 5, f"stopped after {time.monotonic() - t0:.1f}s"
    assert proc.returncode == 1, out
    assert not _left_running(str(tmp_path)), _left_running(str(tmp_path))
    tests = {t["test"]: t for t in json.loads((report / "results.json").read_text())["tests"]}
    assert tests["test_hangs_in_a_fault"]["verdict"] == "error"
    assert json.loads((report / "run.json").read_text())["interrupted"] is True
    if os.geteuid() == 0:
        assert json.loads((state / "state.json").read_text()) == {"pids": []}


def test_run_on_a_kernel_whose_unprotect_does_nothing(shim, tmp_path):
    """Done-when of issue 15, on a subset: finished within the sum of its tests' bounds, a
    complete report, those tests as failures, exit 1, host state left by its pytest."""
    report = tmp_path / "report"
    keyword = ("(test_python_write_resolved_by_native_handler or test_stopped_record_handler) "
               "and anon")
    t0 = time.monotonic()
    proc = _uffdwp_run("-k", keyword, "-j", "2", "--report", str(report),
                       env=_env(shim, "unprotect-noop"))
    out, _ = proc.communicate(timeout=120)
    seconds = time.monotonic() - t0
    assert proc.returncode == 1, out
    tests = json.loads((report / "results.json").read_text())["tests"]
    assert sorted((t["test"], t["verdict"]) for t in tests) == [
        ("test_python_write_resolved_by_native_handler", "fail"),
        ("test_stopped_record_handler_leaves_no_writer_blocked", "fail")], tests
    assert seconds < 15 + 20, f"{seconds:.1f}s"  # the sum of the two tests' bounds
    for name in ("report.md", "report.html", "junit.xml", "results.ktap", "kcidb.json"):
        assert (report / name).stat().st_size > 0
    run = json.loads((report / "run.json").read_text())
    if os.geteuid() == 0:
        from uffdwp import hostsetup
        members = json.loads((hostsetup.STATE_DIR / "state.json").read_text())["pids"]
        assert run["pytest"]["pid"] not in members
