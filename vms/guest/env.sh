# SPDX-License-Identifier: GPL-2.0-only
# The environment uffdwp runs in inside a guest: sourced by the run.sh that `uffdwp matrix` writes
# for each kernel, and by vagrant-run.sh before `uffdwp` in a Vagrant machine.
export HOME=/root LANG=C.UTF-8 TMPDIR=/tmp
export UFFDWP_SCRATCH=/uffdwp-scratch
export UFFDWP_STRESS_SCALE=0.2  # emulated CPU: smaller stress loads, same checks
# in a VM the console is the only log: keep Python's output unbuffered, progress in plain lines
export PYTHONUNBUFFERED=1 NO_COLOR=1 UFFDWP_PROGRESS=plain
