#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Check `uffdwp run` report directories with the reports' real consumers (kcidb-io, junitparser,
the kernel's kunit_parser.py) against their results.json, and print what each consumer counted.

  .venv/bin/python ci/check-reports.py REPORT_DIR... | MATRIX_DIR...
A matrix directory (with summary.json) stands for each of its kernels' directories.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.consumers import check_dir


def report_dirs(paths: list[str]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if (p / "summary.json").exists():
            out += [p / k["dir"] for k in json.loads((p / "summary.json").read_text())["kernels"]
                    if (p / k["dir"] / "results.json").exists()]
        else:
            out.append(p)
    return out


def main(argv: list[str]) -> int:
    dirs = report_dirs(argv)
    if not dirs:
        print("check-reports: no report directories given", file=sys.stderr)
        return 2
    bad = 0
    for d in dirs:
        try:
            figures = check_dir(d)
        except (AssertionError, OSError, ValueError, KeyError) as e:
            bad += 1
            print(f"{d}: FAILED: {type(e).__name__}: {e}")
            continue
        print(f"{d}: ok " + json.dumps(figures))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
