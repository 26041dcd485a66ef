# SPDX-License-Identifier: GPL-2.0-only
"""Bad input to `uffdwp bench`: one clear error line, a non-zero exit, no traceback, before any
memory is allocated or anything written."""

from __future__ import annotations

import json

import pytest

from .childproc import assert_clear_error, describe, run_cli


@pytest.mark.parametrize("argv, needle", [
    (["--repeats", "0"], "--repeats"),
    (["--repeats", "x"], "--repeats"),
    (["--writers", "0"], "--writers"),
    (["--writers", "1", "513"], "--writers"),
    (["--rates", "fast"], "rate"),
    (["--rates", "-3"], "rate"),
    (["--size", "0"], "size"),
    (["--downtime-ms", "0"], "--downtime-ms"),
    (["--precopy-time-limit", "-1"], "seconds"),
    (["--roundtrip-pages", "-1"], "--roundtrip-pages"),
    (["--roundtrip-rounds", "0"], "--roundtrip-rounds"),
    (["--patterns", "zeros"], "invalid choice"),
    (["--methods", "criu"], "invalid choice"),
    (["--dir", "/nonexistent/deeper/dir"], "exists"),
    (["--size", "1T"], "memory"),
])
def test_bench_snapshot_refuses_bad_options(argv, needle):
    proc = run_cli("bench", "snapshot", "--no-plots", *argv)
    assert proc.returncode in (1, 2), describe(proc)
    assert_clear_error(proc, needle)


@pytest.mark.parametrize("argv, needle", [
    (["--pages", "0"], "--pages"),
    (["--rounds", "1001"], "--rounds"),
])
def test_bench_roundtrip_refuses_bad_options(argv, needle):
    assert_clear_error(run_cli("bench", "roundtrip", *argv), needle)


def test_bench_plot_refuses_what_is_not_a_bench_result(tmp_path):
    assert_clear_error(run_cli("bench", "plot", str(tmp_path / "missing.json")),
                       "No such file")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    assert_clear_error(run_cli("bench", "plot", str(other)), "not the JSON")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert_clear_error(run_cli("bench", "plot", str(broken)), "broken.json")
