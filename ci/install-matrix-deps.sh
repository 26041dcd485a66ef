#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Install what `uffdwp matrix` needs on a Debian host: QEMU (TCG works everywhere; KVM where real),
# a static busybox for the guest initramfs, cpio/xz/zstd to build it, and apt's download tooling.
# Idempotent: does nothing when all packages are already installed.
# Usage: ci/install-matrix-deps.sh [--vagrant]   (--vagrant adds vagrant + vagrant-libvirt + libvirt)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# debian-archive-keyring: apt verifies the Debian suites' Release files with it (Ubuntu lacks it)
# bpftrace: `uffdwp wrlat --pid` inside the guests (they see this host's root), where kprobes are
pkgs=(qemu-system-x86 qemu-utils busybox-static xz-utils zstd e2fsprogs debian-archive-keyring
      ca-certificates bpftrace)
if [[ "${1:-}" == "--vagrant" ]]; then
    pkgs+=(vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients debootstrap)
fi

missing=()
for p in "${pkgs[@]}"; do
    # dpkg-query prints "install ok installed" only for fully installed packages
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    sudo_=""
    [[ $(id -u) -eq 0 ]] || sudo_="sudo"
    $sudo_ apt-get update -qq
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"
fi
echo "matrix deps present: ${pkgs[*]}"
