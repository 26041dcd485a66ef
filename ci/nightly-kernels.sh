#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# The nightly's job matrix: a comma-separated kernel list, each name checked against the
# catalogue (vms/kernels.cfg), as a JSON array. Prints kernels=[...] for $GITHUB_OUTPUT.
#   ci/nightly-kernels.sh 5.10,6.1,6.12,7.2,host
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - "${1:-}" <<'PY'
import configparser
import json
import sys

catalogue = configparser.ConfigParser(interpolation=None)
catalogue.read("vms/kernels.cfg")
names = list(dict.fromkeys(n.strip() for n in sys.argv[1].split(",") if n.strip()))
unknown = [n for n in names if not catalogue.has_section(n)]
if unknown or not names:
    sys.exit(f"nightly-kernels: unknown kernel(s) {', '.join(unknown) or '(none given)'}; "
             f"the catalogue has {', '.join(catalogue.sections())}")
print("kernels=" + json.dumps(names))
PY
