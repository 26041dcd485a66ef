#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# The uffdwp box's entry points, installed by vms/build-box.sh as /usr/local/bin/uffdwp and
# /usr/local/sbin/uffdwp-vagrant-run. The box knows nothing else of uffdwp: this mounts the host's
# / (9p tag hostroot, read-only) and hands over to the checkout's vms/guest/vagrant-run.sh, so a
# change there needs no new box. The Vagrantfile puts the checkout's path on the kernel command
# line (uffdwp.repo=).
set -u
me=${0##*/}
if [ "$(id -u)" != 0 ]; then
    echo "$me: needs root (it mounts the host's / and runs uffdwp as root): sudo $me $*" >&2
    exit 1
fi
repo=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^uffdwp\.repo=//p')
if [ -z "$repo" ]; then
    echo "$me: no uffdwp.repo= on the kernel command line: not a machine of uffdwp's Vagrantfile" >&2
    exit 120
fi
lower=/mnt/uffdwp-lower
mkdir -p "$lower"
# cache=loose: the host's / does not change under a run, and each 9p round trip is slow under TCG
mountpoint -q "$lower" ||
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro,cache=loose hostroot "$lower" ||
    { echo "$me: cannot mount the host's / (9p tag hostroot)" >&2; exit 121; }
[ -f "$lower$repo/vms/guest/vagrant-run.sh" ] ||
    { echo "$me: $repo/vms/guest/vagrant-run.sh not found on the host" >&2; exit 121; }
exec /bin/sh "$lower$repo/vms/guest/vagrant-run.sh" "$me" "$@"
