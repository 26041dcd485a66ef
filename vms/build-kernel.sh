#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Build a kernel that `uffdwp matrix --kernel` boots: a minimal config (tinyconfig, or the
# build directory's own .config when there is one) plus vms/uffdwp.config, everything built in,
# no modules. Rebuilds are incremental: run it again after changing the source tree.
#
#   vms/build-kernel.sh SRC [BUILD]      -> BUILD/arch/x86/boot/bzImage   (BUILD: SRC/../build-<name>)
#
# Kernel builds are CPU-heavy: it runs at nice 15 with JOBS (default 2) jobs, and through ccache
# when it is installed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "${1:?usage: $0 SRC [BUILD]}" && pwd)
build=${2:-$(dirname "$src")/build-$(basename "$src")}
jobs=${JOBS:-2}
fragment=$here/uffdwp.config
mkdir -p "$build"
build=$(cd "$build" && pwd)

cc=gcc
if command -v ccache >/dev/null 2>&1; then
    cc="ccache gcc"
    export CCACHE_DIR=${CCACHE_DIR:-$here/cache/ccache}
fi
mk() { nice -n 15 make -s -C "$src" O="$build" ARCH=x86_64 CC="$cc" HOSTCC="$cc" -j"$jobs" "$@"; }

if [ ! -f "$build/.config" ]; then
    mk tinyconfig >/dev/null
fi
# merge the fragment every time (cheap): an edited fragment takes effect on the next build
"$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$fragment" >/dev/null
mk olddefconfig >/dev/null
# every =y line of the fragment must have survived olddefconfig (a dependency it lacks drops it)
missing=$(grep -E '^CONFIG_[A-Z0-9_]+=y' "$fragment" | while read -r line; do
    grep -qx "$line" "$build/.config" || echo "${line%=y}"
done)
if [ -n "$missing" ]; then
    echo "build-kernel: not set after olddefconfig (missing dependency?):" $missing >&2
    exit 1
fi
mk bzImage
echo "$build/arch/x86/boot/bzImage"
