# SPDX-License-Identifier: GPL-2.0-only
"""wrlat's handling of its bpftrace child (start, attach line, stop by exit or SIGINT, output),
with a stand-in bpftrace on PATH: the kernel side is exercised by suites/test_wrlat.py where
kprobes exist."""

from __future__ import annotations

import subprocess

import pytest

from uffdwp.bench import wrlat

FAKE_BPFTRACE = """#!/bin/sh
echo "Attaching 4 probes..."
sleep 0.2
echo "uffdwp-wrlat: tracing"
trap 'printf "\\n@usecs:\\n[4, 8)    3 |@@@   |\\n[16, 32)  1 |@     |\\n"; exit 0' INT
while :; do sleep 0.05; done
"""


@pytest.fixture
def fake_bpftrace(tmp_path, monkeypatch):
    exe = tmp_path / "bpftrace"
    exe.write_text(FAKE_BPFTRACE)
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")


@pytest.mark.timeout(30)
def test_tracer_ends_with_the_traced_process(fake_bpftrace):
    target = subprocess.Popen(["sleep", "0.5"])
    tracer = wrlat.Tracer(target.pid)
    tracer.start(timeout=10)
    target.wait()
    res = tracer.wait(duration=20)
    assert res.ended_by == "exit" and res.bpftrace_status == 0
    assert res.histogram_us == [0, 0, 0, 3, 0, 1] and res.count == 4
    assert 4 <= res.quantile_us(0.5) < 8


@pytest.mark.timeout(30)
def test_tracer_stops_on_duration(fake_bpftrace):
    target = subprocess.Popen(["sleep", "30"])
    try:
        tracer = wrlat.Tracer(target.pid)
        tracer.start(timeout=10)
        res = tracer.wait(duration=0.3)
        assert res.ended_by == "duration" and res.count == 4
    finally:
        target.kill()
        target.wait()


@pytest.mark.timeout(30)
def test_tracer_reports_a_bpftrace_that_fails(tmp_path, monkeypatch):
    exe = tmp_path / "bpftrace"
    exe.write_text("#!/bin/sh\necho 'ERROR: Error attaching probe: kprobe:handle_userfault'\n"
                   "exit 1\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(RuntimeError, match=r"before tracing: .*Error attaching probe"):
        wrlat.Tracer(1).start(timeout=10)
