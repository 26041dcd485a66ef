#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Lint, a step of .ci/run and of the pull-request workflow (and of .pre-commit-config.yaml):
# ruff over the tree; vermin: no language or library feature newer than the Python floor that
# pyproject.toml's requires-python states (ruff's target version comes from it too); mypy,
# strict on the binding (the files in pyproject.toml's [tool.mypy]).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
floor=$(sed -n 's/^requires-python = ">=\([0-9.]*\)"$/\1/p' pyproject.toml)
[ -n "$floor" ] || { echo "lint: no requires-python = \">=X.Y\" in pyproject.toml" >&2; exit 1; }
# union-types: the runtime `A | B` that sets the floor; eval-annotations: names used in them
.venv/bin/vermin --quiet --no-tips --violations --feature union-types --eval-annotations \
  --target="$floor-" setup.py uffdwp suites tests ci vms/guest
.venv/bin/mypy
