#!/bin/sh
# uffdwp-vagrant-run: run inside a Vagrant machine (as root, over `vagrant ssh`). Mounts the host's /
# (9p tag hostroot, read-only) under a tmpfs overlay and the per-kernel output directory (9p tag
# out) at its host path, then runs <out>/.guest/run.sh there: the same layout as vms/guest/init
# gives a direct QEMU guest. The box builder installs this as /usr/local/sbin/uffdwp-vagrant-run.
set -u
O9P="trans=virtio,version=9p2000.L,msize=262144"
R=/mnt/uffdwp-root
mkdir -p /mnt/uffdwp-out /mnt/uffdwp-lower /mnt/uffdwp-rw $R
mountpoint -q /mnt/uffdwp-out || mount -t 9p -o "$O9P" out /mnt/uffdwp-out || exit 120
. /mnt/uffdwp-out/.guest/config
mountpoint -q /mnt/uffdwp-lower || mount -t 9p -o "$O9P,ro,cache=loose" hostroot /mnt/uffdwp-lower \
    || exit 121
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
chroot $R /bin/sh "$OUT/.guest/run.sh"
rc=$?
echo "$rc" > "/mnt/uffdwp-out/.guest/exit_status"
sync
exit $rc
