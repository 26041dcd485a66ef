#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Prove each known bug on real kernels: its tests fail on a kernel without the fix and pass on
# one with it (see vms/PROOF.md). Takes an hour or more: Debian kernels are downloaded,
# linux-source-6.1 is built once with vms/uffdwp.config (nice 15, 2 jobs) and again, incrementally,
# with each reverse patch of vms/reverts/; every kernel boots under QEMU.
#
#   vms/prove-known-bugs.sh [BUG ...]      (default: every bug with a proof recipe)
#
# Writes reports/prove/PROOF.md (the table) and one matrix report per kernel beside it.
cd "$(dirname "$0")/.." || exit 1
exec .venv/bin/python -m uffdwp.matrix.prove "$@"
