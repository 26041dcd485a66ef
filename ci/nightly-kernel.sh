#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# One kernel of the nightly matrix: a job of .github/workflows/nightly.yml, and runnable here (as
# root). Installs what the matrix needs, then runs `uffdwp matrix` for that kernel alone into
# REPORT, left readable by the user who called sudo (the workflow uploads it). Exit status: the
# matrix's (0: the kernel is ok).
#   ci/nightly-kernel.sh KERNEL REPORT
# KERNEL_TIMEOUT: seconds the guest may run (default 900); the whole matrix command is bounded by
# KERNEL_TIMEOUT + 300 (download, KVM probe, report), so the job's own limit must exceed that plus
# the install.
set -euo pipefail
cd "$(dirname "$0")/.."
kernel=$1 report=$2 guest_timeout=${KERNEL_TIMEOUT:-900}
./bootstrap.sh --matrix
rc=0
timeout --kill-after=30 $((guest_timeout + 300)) .venv/bin/uffdwp matrix --kernels "$kernel" \
    --report "$report" --accel auto --timeout "$guest_timeout" || rc=$?
if [[ -n ${SUDO_UID:-} && -d $report ]]; then
    chown -R "$SUDO_UID:$SUDO_GID" "$report"
fi
exit $rc
