#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Tests, a step of .ci/run and of the pull-request workflow: what this kernel's userfaultfd
# offers, then the README's test command, `.venv/bin/python -m pytest -n auto`, over the given
# paths. As root: userfaultfd, huge pages and swap need it.
#   ci/test.sh           .ci/run: the unit tests (tests/) and the conformance suites (suites/)
#   ci/test.sh tests     the pull-request workflow's unit job
#   ci/test.sh suites    its host-suite job: the suites on the runner's own kernel
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/uffdwp probe
.venv/bin/python -m pytest -n auto "$@"
