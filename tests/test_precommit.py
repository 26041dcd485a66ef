# SPDX-License-Identifier: GPL-2.0-only
"""The pre-commit hook is CI's lint: a valid config whose one hook runs ci/lint.sh."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".pre-commit-config.yaml"


def test_pre_commit_hook_runs_ci_lint():
    hooks = [h for repo in yaml.safe_load(CONFIG.read_text())["repos"] for h in repo["hooks"]]
    assert [h["entry"] for h in hooks] == ["bash ci/lint.sh"]
    assert hooks[0]["language"] == "system" and hooks[0]["pass_filenames"] is False
    exe = shutil.which("pre-commit", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("pre-commit not installed (pip install -e '.[dev]')")
    p = subprocess.run([exe, "validate-config", str(CONFIG)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
