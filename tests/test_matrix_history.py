# SPDX-License-Identifier: GPL-2.0-only
"""History mode, --kernel and known-bug selection: pure logic, no network, no VM."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

import pytest

from uffdwp.matrix import command, history, qemu, results
from uffdwp.matrix.catalogue import CatalogueError, load_catalogue
from uffdwp.matrix.debfetch import Build
from uffdwp.matrix.report import KernelOutcome
from uffdwp.matrix.results import KernelRecord
from uffdwp.runner.plugin import bug_selection

KB = "known-bug"
ROWS = [
    ("6.1.0-47", {"mremap-clear": KB, "close-reset": KB, "hugetlb-fork": KB}),
    ("6.1.0-50", {"mremap-clear": KB, "close-reset": "error", "hugetlb-fork": KB}),
    ("6.1.0-54", {"mremap-clear": KB, "close-reset": "skip", "hugetlb-fork": KB}),
    ("6.1.0-55", {"mremap-clear": "pass", "close-reset": "pass", "hugetlb-fork": KB}),
    ("6.1.0-57", {"mremap-clear": "pass", "close-reset": "pass", "hugetlb-fork": KB}),
]


def test_first_build_where_the_verdict_changes():
    changes = history.verdict_changes(ROWS)
    assert [(c.before, c.old, c.at, c.new) for c in changes["mremap-clear"]] == [
        ("6.1.0-54", "known-bug", "6.1.0-55", "pass")]
    # builds that said nothing (error, skip) are stepped over, not taken for a change
    assert [(c.before, c.at) for c in changes["close-reset"]] == [("6.1.0-47", "6.1.0-55")]
    assert history.describe("close-reset", ROWS, changes) == (
        "known-bug up to 6.1.0-47, pass from 6.1.0-55 (6.1.0-50, 6.1.0-54 in between: "
        "no verdict)")
    assert "hugetlb-fork" not in changes
    assert history.describe("mremap-clear", ROWS, changes) == (
        "known-bug up to 6.1.0-54, pass from 6.1.0-55")
    assert history.describe("hugetlb-fork", ROWS, changes) == (
        "known-bug on every build (6.1.0-47 … 6.1.0-57)")
    assert history.describe("thp-migration", ROWS, changes) == (
        "no conclusive verdict on any build")


def test_a_regression_after_a_fix_is_a_second_change():
    rows = [("a", {"close-reset": "known-bug"}), ("b", {"close-reset": "pass"}),
            ("c", {"close-reset": "fail"})]
    assert [c.new for c in history.verdict_changes(rows)["close-reset"]] == ["pass", "fail"]


def test_build_specs_and_history_report(tmp_path):
    entry = load_catalogue()["6.1"]
    builds = [Build("linux-image-6.1.0-50-amd64", "6.1.176-1", "bookworm"),
              Build("linux-image-6.1.0-55-amd64", "6.1.192-1", "bookworm-security")]
    specs = history.build_specs(entry, builds)
    assert [(s.name, s.package, s.version) for s in specs] == [
        ("6.1.0-50", "linux-image-6.1.0-50-amd64", "6.1.176-1"),
        ("6.1.0-55", "linux-image-6.1.0-55-amd64", "6.1.192-1")]
    assert specs[0].suites == ("bookworm", "bookworm-security")

    def outcome(name: str, version: str, verdict: str) -> KernelOutcome:
        rec = KernelRecord(release=f"{name}-amd64", tests=[results.TestRow(
            "suites/test_regressions.py::test_mremap_clears_wp[present-anon]",
            "test_mremap_clears_wp", "anon", verdict, bug={"key": "mremap-clear"})])
        named = verdict == "pass"
        evidence = {"mremap-clear": {"status": "named" if named else "not-named", "fixed": named,
                                     "detail": ""}}
        return KernelOutcome(name, "qemu", "ok", package_version=version, record=rec,
                             fix_evidence=evidence)

    data = history.write(tmp_path, "6.1", [outcome("6.1.0-50", "6.1.176-1", "known-bug"),
                                           outcome("6.1.0-55", "6.1.192-1", "pass")])
    assert data["lines"]["mremap-clear"] == (
        "known-bug up to 6.1.0-50, pass from 6.1.0-55; changelog: fix in from 6.1.0-55")
    md = (tmp_path / "history.md").read_text()
    assert "- **mremap-clear**: known-bug up to 6.1.0-50, pass from 6.1.0-55; changelog" in md
    assert "| 6.1.0-55 | 6.1.192-1 | ok |" in md
    assert (tmp_path / "history.json").exists()


def test_numa_args():
    assert qemu.numa_args(2048, 1, 1) == []
    args = qemu.numa_args(2048, 2, 1)
    assert "memory-backend-ram,id=mem1,size=1024M" in args
    assert "node,nodeid=0,memdev=mem0,cpus=0-0" in args and "node,nodeid=1,memdev=mem1" in args


def matrix_args(**kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    argv = ["matrix"]
    for key, value in kw.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(argv)


def test_kernel_option_selects_a_local_kernel_only(tmp_path):
    from tests.test_matrix_catalogue import fake_bzimage

    img = tmp_path / "bzImage"
    img.write_bytes(fake_bzimage(b"6.1.192 (me@tree) #2 SMP"))
    specs = command.selected(matrix_args(kernel=img))
    assert [(s.name, s.source, s.modules) for s in specs] == [("local-6.1.192", "local", "")]
    both = command.selected(matrix_args(kernel=img, kernels="6.1"))
    assert [s.name for s in both] == ["6.1", "local-6.1.192"]
    with pytest.raises(CatalogueError, match="--modules goes with --kernel"):
        command.selected(matrix_args(modules=tmp_path))
    (tmp_path / "junk").write_bytes(b"junk")
    with pytest.raises(CatalogueError, match="not an x86 bzImage"):
        command.selected(matrix_args(kernel=tmp_path / "junk"))


def test_history_needs_a_debian_series():
    assert command.history_entry(matrix_args(history="6.1")).suites[-1] == "bookworm-security"
    with pytest.raises(CatalogueError, match="not a Debian series"):
        command.history_entry(matrix_args(history="host"))
    with pytest.raises(CatalogueError, match="picks its own kernels"):
        command.history_entry(matrix_args(history="6.1", kernels="6.1.0-50"))


def test_guest_command_with_bugs():
    from uffdwp.matrix import guestcmd

    cmd = command.guest_command(matrix_args(), "close-reset,mremap-clear")
    assert cmd == guestcmd.RUN_COMMAND + " --bugs close-reset,mremap-clear"
    with pytest.raises(CatalogueError, match="with --guest-command"):
        command.guest_command(matrix_args(guest_command="true"), "all")


def test_bug_selection():
    assert bug_selection("all") is None
    assert bug_selection(" close-reset, mremap-clear ") == {"close-reset", "mremap-clear"}
    with pytest.raises(ValueError, match="unknown known-bug key"):
        bug_selection("close-reset,nope")


def test_plugin_keeps_only_the_selected_bugs_tests(tmp_path):
    """--uffdwp-bugs deselects by the bug each item carries (per memory type), as the suites'
    conftest records it at collection."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent('''
        def pytest_collection_modifyitems(items):
            for item in items:
                mem = item.callspec.params.get("memtype") if hasattr(item, "callspec") else None
                name = item.name.split("[")[0]
                bug = {"test_close": "close-reset",
                       "test_fork": "hugetlb-fork" if mem == "hugetlb" else None}.get(name)
                if bug:
                    item.user_properties.append(("bug", bug))
    '''))
    (tmp_path / "test_x.py").write_text(textwrap.dedent('''
        import pytest
        def test_close(): pass
        @pytest.mark.parametrize("memtype", ["anon", "hugetlb"])
        def test_fork(memtype): pass
        def test_plain(): pass
    '''))

    def collected(value: str) -> list[str]:
        p = subprocess.run([sys.executable, "-m", "pytest", "-p", "uffdwp.runner.plugin",
                            f"--uffdwp-bugs={value}", "--collect-only", "-q", "-p",
                            "no:cacheprovider", "-p", "no:xdist", str(tmp_path)],
                           capture_output=True, text=True, cwd=tmp_path)
        return [ln.split("::", 1)[1] for ln in p.stdout.splitlines() if "::" in ln]

    assert collected("all") == ["test_close", "test_fork[hugetlb]"]
    assert collected("hugetlb-fork") == ["test_fork[hugetlb]"]
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "uffdwp.runner.plugin",
                        "--uffdwp-bugs=nope", "--collect-only", "-q", "-p", "no:xdist",
                        str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 4 and "unknown known-bug key(s) nope" in p.stderr


def test_tcg_guests_keep_time_by_the_hpet(tmp_path):
    """Under TCG a loaded host makes the guest calibrate its TSC far too slow (its clock then
    ran ~7x fast and timeouts fired early): TCG guests use the emulated HPET."""
    tcg = qemu.qemu_command(tmp_path / "k", tmp_path / "i", tmp_path, "tcg")
    kvm = qemu.qemu_command(tmp_path / "k", tmp_path / "i", tmp_path, "kvm")
    assert "clocksource=hpet" in tcg[tcg.index("-append") + 1]
    assert "clocksource=hpet" not in kvm[kvm.index("-append") + 1]
