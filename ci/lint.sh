#!/usr/bin/env bash
# Lint, a step of .ci/run and of the pull-request workflow (and of .pre-commit-config.yaml):
# ruff over the tree, and vermin: no language or library feature newer than the Python floor
# that pyproject.toml's requires-python states (ruff's target version comes from it too).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
floor=$(.venv/bin/python -c 'import tomllib
print(tomllib.load(open("pyproject.toml", "rb"))["project"]["requires-python"].removeprefix(">="))')
# union-types: the runtime `A | B` that sets the floor; eval-annotations: names used in them
.venv/bin/vermin --quiet --no-tips --violations --feature union-types --eval-annotations \
  --target="$floor-" setup.py uffdwp suites tests ci vms/guest
