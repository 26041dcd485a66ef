#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Installs what uffdwp needs on a Debian/Ubuntu machine (as root) and builds it into .venv.
# Idempotent: a second run only checks. Usage: ./bootstrap.sh [--matrix] [--vagrant] [--dev]
#   --matrix   adds QEMU, busybox etc. for `uffdwp matrix`
#   --vagrant  adds those, Vagrant and vagrant-libvirt, builds the box (vms/build-box.sh) and starts
#              libvirtd/virtlogd where they are not running (they stay running)
#   --dev      what the project's own tests use to check the reports: Debian's chromium (headless
#              screenshots of report.html) and the kernel's kunit_parser.py (reads results.ktap)
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v gcc >/dev/null || need+=(gcc)
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  2>/dev/null || need+=(python3-dev)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
for tool in fallocate mkswap swapon; do command -v "$tool" >/dev/null || need+=(util-linux); done
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: missing ${need[*]}; run as root or install them" >&2; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
pip_quiet() {  # pip's output only when it fails (this machine's pip config warns a lot)
  local log; log=$(mktemp)
  if ! .venv/bin/python -m pip "$@" >"$log" 2>&1; then
    grep -v '^WARNING' "$log" >&2; rm -f "$log"; return 1
  fi
  rm -f "$log"
}
pip_quiet install -q --upgrade pip
# Editable install: cffi compiles uffdwp/_native next to the sources, where the suites import it.
pip_quiet install -q -e '.[dev]' || { echo "bootstrap: building uffdwp failed" >&2; exit 1; }
.venv/bin/python -c 'import uffdwp._native' || { echo "bootstrap: native build failed" >&2; exit 1; }

matrix=0 vagrant=0 dev=0
for arg in "$@"; do
  case "$arg" in
    --matrix) matrix=1 ;;
    --vagrant) vagrant=1 ;;
    --dev) dev=1 ;;
    *) echo "bootstrap: unknown option $arg (use --matrix, --vagrant, --dev)" >&2; exit 2 ;;
  esac
done
if ((vagrant)); then
  ci/install-matrix-deps.sh --vagrant
  .venv/bin/python -m uffdwp.matrix.libvirtd start
  vms/build-box.sh
elif ((matrix)); then
  ci/install-matrix-deps.sh
fi
if ((dev)); then
  if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
      echo "bootstrap: --dev needs chromium; run as root or install it" >&2; exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  fi
  bash ci/fetch-kunit-parser.sh
fi
echo "bootstrap: ready (.venv/bin/uffdwp)"
