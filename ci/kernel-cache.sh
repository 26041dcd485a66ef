#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# The nightly's cache of Debian kernel packages (vms/cache/debs), in each kernel's job:
#   ci/kernel-cache.sh prune    drop the .debs that no kernel unpacked in vms/cache/kernels/ is
#                               made of (an older ABI's packages, restored from an earlier night)
#   ci/kernel-cache.sh digest   print digest=<16 hex digits> naming the remaining .debs (the cache
#                               key ends with it: a new entry only when the packages change), or
#                               digest= when there are none
# KERNEL_CACHE: the cache directory (default vms/cache)
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${KERNEL_CACHE:-vms/cache}
case ${1:-} in
prune)
    declare -A keep=()
    for complete in "$cache"/kernels/*/.complete; do
        [[ -f $complete ]] || continue
        while read -r pkg; do [[ -n $pkg ]] && keep[$pkg]=1; done <"$complete"
    done
    for deb in "$cache"/debs/*.deb; do
        [[ -f $deb ]] || continue
        name=${deb##*/}
        if [[ -z ${keep[${name%%_*}]:-} ]]; then
            rm -f "$deb"
            echo "kernel-cache: pruned $name"
        fi
    done
    ;;
digest)
    names=$(find "$cache/debs" -maxdepth 1 -name '*.deb' -printf '%f\n' 2>/dev/null | sort)
    if [[ -z $names ]]; then
        echo "digest="
    else
        echo "digest=$(printf '%s\n' "$names" | sha256sum | cut -c1-16)"
    fi
    ;;
*)
    echo "usage: ci/kernel-cache.sh prune|digest" >&2
    exit 2
    ;;
esac
