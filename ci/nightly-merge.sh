#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# The nightly's last job (runnable here too): the per-kernel matrix reports merged into one, with
# its KCIDB file (`uffdwp matrix --merge`); a kernel in KERNELS without a report is listed as
# missing. Appends the merged report.md to the job summary on GitHub. Exit status: the merge's
# (0: every kernel ok, 1: not, 2: the reports could not be merged).
#   ci/nightly-merge.sh OUT KERNELS [DIR...]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1 kernels=$2
shift 2
rc=0
.venv/bin/uffdwp matrix --merge "$@" --kernels "$kernels" --report "$out" || rc=$?
if [[ -n ${GITHUB_STEP_SUMMARY:-} && -f $out/report.md ]]; then
    cat "$out/report.md" >>"$GITHUB_STEP_SUMMARY"
fi
exit $rc
