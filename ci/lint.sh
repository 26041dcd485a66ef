#!/usr/bin/env bash
# Lint, a step of .ci/run and of the pull-request workflow: ruff over the tree, then mypy
# (strict on the binding: the files in pyproject.toml's [tool.mypy]).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/mypy
