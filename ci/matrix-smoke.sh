#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Smoke test of the kernel matrix runner, for .ci/run: boots two Debian guest kernels under QEMU,
# one older than 6.4 (6.1) and one newer (6.12), runs the suites in each, and checks that both
# booted, ran, and negotiated the features their Debian builds are known to have.
#
#   ci/matrix-smoke.sh [extra `uffdwp matrix` options]
# Environment:
#   MATRIX_SMOKE_REPORT   report directory (default reports/matrix-smoke)
#   MATRIX_SMOKE_KERNELS  default 6.1,6.12
#   MATRIX_SMOKE_GUEST_COMMAND  what runs in each guest (default: `uffdwp run` without the
#                         QEMU snapshot and wrlat suites)
#   MATRIX_SMOKE_STRICT   1 = also fail on test failures inside the guests (default 0: the
#                         suites' own verdicts are reported, the smoke judges the runner)
# Needs: ci/install-matrix-deps.sh (run here), root (guest userfaultfd needs no host root, but the
# "host" kernel entry does), network to the Debian mirror on the first run (cached after).
# Takes about 2 minutes the first time (download + unpack), about 1 minute after.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
report=${MATRIX_SMOKE_REPORT:-reports/matrix-smoke}
kernels=${MATRIX_SMOKE_KERNELS:-6.1,6.12}
python=${PYTHON:-$repo/.venv/bin/python}

bash ci/install-matrix-deps.sh >/dev/null

start=$(date +%s)
set +e
# QEMU's own snapshot under nested TCG and bpftrace's start-up take minutes per guest: they
# belong to the full matrix (`uffdwp matrix`), not to this smoke of the runner.
guest_command=${MATRIX_SMOKE_GUEST_COMMAND:-"{repo}/.venv/bin/uffdwp run --report {out} --jobs 1 \
--allow-known-bugs -k 'not test_qemu_snapshot and not test_wrlat'"}
# hard ceiling well below CI's budget even if a guest hangs and its own timeout misbehaves
timeout --kill-after=30 780 "$python" -m uffdwp.matrix.command matrix \
    --kernels "$kernels" --report "$report" --timeout 420 --guest-command "$guest_command" "$@"
rc=$?
set -e
echo "matrix-smoke: uffdwp matrix exit $rc after $(( $(date +%s) - start )) s; report $report"

# Judge the runner from summary.json: every kernel reached its suites, and features match
"$python" - "$report/summary.json" "${MATRIX_SMOKE_STRICT:-0}" <<'PY'
import json, sys

path, strict = sys.argv[1], sys.argv[2] == "1"
try:
    s = json.load(open(path))
except (OSError, ValueError) as e:
    sys.exit(f"matrix-smoke: no usable summary.json: {e}")
# the Debian builds' negotiated features (measured; see shared kernel facts)
expected = {"5.10": 0x1FF, "6.1": 0x1FFF, "6.12": 0x1FFFF, "7.2": 0x1FFFF}
bad = []
for k in s["kernels"]:
    name, status, feats = k["name"], k["status"], k["features"]
    print(f"matrix-smoke: {name}: {status} release={k['release']} features={k['features_hex']} "
          f"verdicts={k['verdicts']} {k['seconds']} s")
    if status in ("boot-failed", "timeout", "skipped"):
        bad.append(f"{name}: {status}: {k['detail']}")
    elif status == "failed" and strict:
        bad.append(f"{name}: test failures (strict)")
    elif status == "failed" and k["results_source"] == "none":
        bad.append(f"{name}: the guest command produced no results: {k['detail']}")
    if name in expected and feats != expected[name]:
        bad.append(f"{name}: features {k['features_hex']} != expected 0x{expected[name]:x}")
if bad:
    print("matrix-smoke: FAILED\n  " + "\n  ".join(bad))
    sys.exit(1)
print("matrix-smoke: ok")
PY

# Each guest's reports, read by their real consumers (kcidb-io, junitparser, kunit_parser.py)
"$python" ci/check-reports.py "$report"
