#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Build the local Vagrant box "uffdwp-debian" (vagrant-libvirt provider) from Debian packages,
# offline from anything but the Debian mirror: debootstrap (minbase + systemd, sshd, sudo) into
# vms/work/box-root, an ext4 image made without a loop mount (mkfs.ext4 -d), converted to qcow2,
# packed with metadata.json into vms/work/uffdwp-debian.box and added with `vagrant box add`.
# The box has no kernel of its own: each machine boots a catalogue kernel directly
# (libvirt kernel/initrd), whose initramfs loads the modules and switches to this disk. Nor does it
# hold uffdwp: its `uffdwp` (vms/guest/box-entry.sh) runs the checkout's over 9p.
# The box depends on nothing of a checkout but this script and the entry point: their digest goes
# into the box, and an installed box with the same digest is kept (whichever checkout built it).
#   vms/build-box.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/.."
work=vms/work
box=$work/uffdwp-debian.box
digest=$(cat vms/build-box.sh vms/guest/box-entry.sh | sha256sum | cut -c1-16)
installed=${VAGRANT_HOME:-$HOME/.vagrant.d}/boxes/uffdwp-debian/0/libvirt/uffdwp-box.digest
if [[ "${1:-}" != "--force" && "$(cat "$installed" 2>/dev/null)" == "$digest" ]]; then
    echo "box uffdwp-debian up to date ($digest)"; exit 0
fi
mkdir -p "$work"
for t in debootstrap mkfs.ext4 qemu-img; do
    command -v $t >/dev/null || { echo "missing $t: ci/install-matrix-deps.sh --vagrant"; exit 1; }
done
root=$work/box-root
rm -rf "$root" && mkdir -p "$root"
debootstrap --variant=minbase \
    --include=systemd-sysv,openssh-server,sudo,udev,iproute2,kmod,util-linux,qemu-guest-agent \
    bookworm "$root" http://deb.debian.org/debian
# vagrant user with Vagrant's well-known insecure key (config.ssh.insert_key = false)
chroot "$root" useradd -m -s /bin/bash vagrant
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > "$root/etc/sudoers.d/vagrant"
mkdir -p "$root/home/vagrant/.ssh"
pub=$(find /usr/share /usr/lib /opt -path '*vagrant*/keys/vagrant.pub' 2>/dev/null | head -1)
[[ -n $pub ]] || { echo "Vagrant's insecure public key not found"; exit 1; }
cp "$pub" "$root/home/vagrant/.ssh/authorized_keys"
chroot "$root" chown -R vagrant:vagrant /home/vagrant/.ssh
chmod 700 "$root/home/vagrant/.ssh"; chmod 600 "$root/home/vagrant/.ssh/authorized_keys"
# Networks (none in a private range; the guest cannot reach anything either way):
# - the SSH NIC is the QEMU user-mode NIC the Vagrantfile puts at PCI 00:1e.0 (qemuargs, restrict=on,
#   net=198.18.0.0/24, hostfwd on 127.0.0.1 only): DHCP from QEMU's built-in server
# - every other NIC is the libvirt-visible one vagrant-libvirt needs (mgmt_attach = false): it
#   carries no traffic; it gets a fixed address only so that the guest agent reports an IPv4 for
#   its MAC, which is how vagrant-libvirt decides the machine is up (libvirt.qemu_use_agent)
cat > "$root/etc/systemd/network/10-uffdwp-ssh.network" <<'NET'
[Match]
Path=pci-0000:00:1e.0
[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
NET
cat > "$root/etc/systemd/network/20-uffdwp-marker.network" <<'NET'
[Match]
Name=en* eth*
[Network]
Address=198.19.0.15/24
DHCP=no
LinkLocalAddressing=no
IPv6AcceptRA=no
ConfigureWithoutCarrier=yes
NET
chroot "$root" systemctl enable systemd-networkd ssh >/dev/null 2>&1 || true
echo "uffdwp-box" > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 uffdwp-box\n' > "$root/etc/hosts"  # sudo resolves it
echo "/dev/vda / ext4 defaults 0 1" > "$root/etc/fstab"
install -m 0755 vms/guest/box-entry.sh "$root/usr/local/bin/uffdwp"
ln -s ../bin/uffdwp "$root/usr/local/sbin/uffdwp-vagrant-run"
rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*
raw=$work/box.raw
rm -f "$raw"; truncate -s 4G "$raw"
mkfs.ext4 -q -F -d "$root" "$raw"
rm -rf "$root"
qemu-img convert -O qcow2 "$raw" "$work/box.img"
rm -f "$raw"
cat > "$work/metadata.json" <<'META'
{"provider": "libvirt", "format": "qcow2", "virtual_size": 4}
META
printf 'Vagrant.configure("2") do |c|\n  c.vm.provider :libvirt do |l|\n    l.driver = "qemu"\n  end\nend\n' \
    > "$work/Vagrantfile.box"
echo "$digest" > "$work/uffdwp-box.digest"
tar -C "$work" -czf "$box" metadata.json box.img uffdwp-box.digest \
    --transform 's/Vagrantfile.box/Vagrantfile/' Vagrantfile.box
rm -f "$work/box.img"
vagrant box add --force --name uffdwp-debian "$box"
rm -f "$box"  # unpacked into Vagrant's box directory now
# vagrant-libvirt uploads a box into libvirt's pool once per build: drop the volumes of earlier
# builds that no machine's disk is based on any more (skipped when libvirtd is not running)
if command -v virsh >/dev/null && virsh -q pool-info default >/dev/null 2>&1; then
    used=$(virsh -q vol-list default | awk '{print $2}' |
        while read -r img; do qemu-img info -U --output=json "$img" 2>/dev/null || true; done |
        sed -n 's/.*"full-backing-filename": "\(.*\)".*/\1/p')
    virsh -q vol-list default | awk '$1 ~ /^uffdwp-debian_vagrant_box_image_/ {print $1, $2}' |
        while read -r vol img; do
            grep -qxF "$img" <<<"$used" || virsh -q vol-delete --pool default "$vol" >/dev/null ||
                true
        done
fi
echo "box built: uffdwp-debian ($digest)"
