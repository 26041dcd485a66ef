#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Fetch the kernel's own KTAP parser, tools/testing/kunit/kunit_parser.py (with kunit_printer.py,
# which it imports), from Debian's linux-source package into vms/cache/kunit/: the tests check
# results.ktap with it. Nothing else of the package is kept. About 140 MB to download and 15 s
# to unpack, once; a second run only checks. Called by `bootstrap.sh --dev`.
#
#   ci/fetch-kunit-parser.sh           (KUNIT_SOURCE_PACKAGE=linux-source-6.1 by default)
# Where the package cannot be had (no Debian archive in apt's sources), it says so and exits 0:
# the tests that need the parser then skip, saying why.
set -uo pipefail
cd "$(dirname "$0")/.."
dest=${UFFDWP_KUNIT_DIR:-vms/cache/kunit}
pkg=${KUNIT_SOURCE_PACKAGE:-linux-source-6.1}
if [ -f "$dest/kunit_parser.py" ] && [ -f "$dest/kunit_printer.py" ]; then
    echo "kunit parser present: $dest ($(cat "$dest/SOURCE" 2>/dev/null))"
    exit 0
fi
if ! apt-cache show "$pkg" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"  # apt downloads as _apt where it can
if ! (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1); then
    echo "fetch-kunit-parser: $pkg is not available from apt here; the KTAP parser tests will skip"
    exit 0
fi
deb=$(ls "$tmp"/*.deb)
mkdir -p "$tmp/out"
# The package holds the source as one tar.xz: stream it, keep two files.
dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards './usr/src/linux-source-*.tar.xz' \
    | xz -dc | tar -x -C "$tmp/out" --wildcards --strip-components=4 \
        '*/tools/testing/kunit/kunit_parser.py' '*/tools/testing/kunit/kunit_printer.py'
if [ ! -f "$tmp/out/kunit_parser.py" ] || [ ! -f "$tmp/out/kunit_printer.py" ]; then
    echo "fetch-kunit-parser: $deb has no tools/testing/kunit/kunit_parser.py" >&2
    exit 1
fi
mkdir -p "$dest"
cp "$tmp/out/kunit_parser.py" "$tmp/out/kunit_printer.py" "$dest/"
dpkg-deb -f "$deb" Package Version | paste -sd' ' > "$dest/SOURCE"
echo "kunit parser fetched: $dest ($(cat "$dest/SOURCE"))"
