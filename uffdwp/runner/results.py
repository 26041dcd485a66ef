# SPDX-License-Identifier: GPL-2.0-only
"""results.json: schema uffdwp-results/1, read by the VM matrix report (uffdwp/matrix/results.py).

Keep the keys exactly as documented; anything else about the run goes to run.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .verdicts import summarize

SCHEMA = "uffdwp-results/1"
# "bugs": every known bug the test has a check for (a pass is a pass for each); "bug": the one
# its verdict is about (the failing check's, else the first)
TEST_KEYS = ("nodeid", "test", "memtype", "verdict", "reason", "bug", "bugs", "duration")


def api_section(probe_result: Any) -> dict:
    """{"features", "feature_names", "ioctls"} from uffdwp.probe.probe(); {} without a uffd."""
    if probe_result is None or not probe_result.api:
        return {}
    return {"features": int(probe_result.features),
            "feature_names": list(probe_result.feature_names),
            "ioctls": int(probe_result.ioctls),
            "unknown_feature_bits": list(probe_result.unknown_feature_bits),
            "below_mainline": list(probe_result.below_mainline)}


def make_test(nodeid: str, test: str, memtype: str | None, verdict: str, reason: str,
               bug: dict | None, duration: float, bugs: list[str] | None = None) -> dict:
    return {"nodeid": nodeid, "test": test, "memtype": memtype or None, "verdict": verdict,
            "reason": reason or "", "bug": bug, "bugs": bugs or None,
            "duration": round(float(duration), 4)}


def build(kernel: dict, api: dict, tests: list[dict], exit_status: int) -> dict:
    return {
        "schema": SCHEMA,
        "kernel": {k: kernel.get(k, "") for k in ("release", "version", "machine")},
        "api": api,
        "tests": [{k: t.get(k) for k in TEST_KEYS} for t in tests],
        "summary": summarize([t["verdict"] for t in tests]),
        "exit_status": int(exit_status),
    }


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a reader (or a crash) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
