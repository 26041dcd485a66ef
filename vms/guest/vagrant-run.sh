#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Runs as root inside a Vagrant machine, started by the box's entry point (vms/guest/box-entry.sh)
# with the host's / already mounted at /mnt/uffdwp-lower. Builds the root vms/guest/init gives a
# direct QEMU guest: the host's / under a tmpfs overlay, the output share (9p tag out) at its host
# path (uffdwp.out= on the kernel command line), scratch space on the box's own disk. Then, as
#   uffdwp-vagrant-run   runs <out>/.guest/run.sh, prepared by `uffdwp matrix --via vagrant`
#   uffdwp ARGS          runs the checkout's `uffdwp ARGS` in the checkout, whose reports/ is then
#                        the output share: reports written there land on the host
set -u
mode=$1
shift
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^uffdwp\.$1=//p"; }
REPO=$(arg repo)
OUT=$(arg out)
O9P="trans=virtio,version=9p2000.L,msize=262144"
R=/mnt/uffdwp-root
mkdir -p /mnt/uffdwp-out /mnt/uffdwp-rw $R
mountpoint -q /mnt/uffdwp-out || mount -t 9p -o "$O9P" out /mnt/uffdwp-out || exit 120
mountpoint -q /mnt/uffdwp-rw || mount -t tmpfs -o mode=0755 rw /mnt/uffdwp-rw
mkdir -p /mnt/uffdwp-rw/upper /mnt/uffdwp-rw/work
mountpoint -q $R || mount -t overlay overlay \
    -o lowerdir=/mnt/uffdwp-lower,upperdir=/mnt/uffdwp-rw/upper,workdir=/mnt/uffdwp-rw/work $R \
    || exit 122
for d in proc sys dev dev/shm dev/pts run; do mkdir -p "$R/$d"; done
mountpoint -q $R/proc || mount -t proc proc $R/proc
mountpoint -q $R/sys || mount -t sysfs sysfs $R/sys
mountpoint -q $R/dev || mount -t devtmpfs devtmpfs $R/dev
mountpoint -q $R/dev/shm || mount -t tmpfs -o mode=1777 shm $R/dev/shm
mountpoint -q $R/dev/pts || mount -t devpts devpts $R/dev/pts
# no tmpfs on /tmp: a checkout under /tmp on the host must stay visible at its path
mkdir -p "$R$OUT"
mountpoint -q "$R$OUT" || mount --bind /mnt/uffdwp-out "$R$OUT"
# scratch on the box's own disk (ext4): swap files work there (UFFDWP_SCRATCH points here)
mkdir -p /var/tmp/uffdwp "$R/uffdwp-scratch"
mountpoint -q "$R/uffdwp-scratch" || mount --bind /var/tmp/uffdwp "$R/uffdwp-scratch"

if [ "$mode" = uffdwp-vagrant-run ]; then
    chroot $R /bin/sh "$OUT/.guest/run.sh"
    rc=$?
    echo "$rc" > "/mnt/uffdwp-out/.guest/exit_status"
else
    # shellcheck disable=SC2016
    chroot $R /bin/sh -c '. "$1/vms/guest/env.sh"; export PATH="$1/.venv/bin:$PATH"
        cd "$1" && shift && exec uffdwp "$@"' sh "$REPO" "$@"
    rc=$?
fi
sync
exit $rc
