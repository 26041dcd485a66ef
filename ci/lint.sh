#!/usr/bin/env bash
# Lint, a step of .ci/run and of the pull-request workflow: ruff over the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
