# SPDX-License-Identifier: GPL-2.0-only
"""Catalogue parsing, Debian index parsing, module metadata: pure logic, no network, no VM."""

from __future__ import annotations

import lzma
import struct

import pytest

from uffdwp.matrix.catalogue import (
    DEFAULT_CATALOGUE,
    DEFAULT_KERNELS,
    CatalogueError,
    load_catalogue,
    parse_catalogue,
    pin,
    select,
)
from uffdwp.matrix.debfetch import (
    Build,
    bzimage_release,
    depends_names,
    image_series,
    locate,
    parse_madison,
    parse_stanza,
    sort_builds,
    sources_list,
)
from uffdwp.matrix.initramfs import CpioWriter
from uffdwp.matrix.kmod import canon, modinfo, read_module, resolve

GOOD = """
[6.1]
source = debian
suite = bookworm bookworm-security
package = linux-image-amd64
expect_release = 6.1.
note = Debian 12

[mine]
source = local
vmlinuz = /tmp/vmlinuz
modules = /tmp/modules/6.9.0

[host]
source = host
"""


def test_shipped_catalogue_has_the_default_kernels():
    cat = load_catalogue(DEFAULT_CATALOGUE)
    for name in DEFAULT_KERNELS:
        assert name in cat
    # a Debian release with security updates: its suite and its security archive
    assert cat["5.10"].suites == ("bullseye", "bullseye-security")
    assert cat["6.1"].suites == ("bookworm", "bookworm-security")
    assert cat["7.2"].suites == ("sid",)
    assert cat["host"].source == "host"


def test_parse_and_select_keeps_order_and_drops_duplicates():
    cat = parse_catalogue(GOOD)
    assert cat["6.1"].package == "linux-image-amd64"
    assert cat["mine"].modules == "/tmp/modules/6.9.0"
    picked = select(cat, "host, 6.1,host")
    assert [k.name for k in picked] == ["host", "6.1"]


@pytest.mark.parametrize("text, msg", [
    ("[x]\nsource = debian\nsuite = sid\n", "needs suite and package"),
    ("[x]\nsource = local\nmodules = /m\n", "needs vmlinuz"),
    ("[x]\nsource = floppy\n", "source must be one of"),
    ("[x]\nsource = host\ncolour = blue\n", "unknown keys"),
    ("no section header\n", "section"),
])
def test_parse_rejects_bad_entries(text, msg):
    with pytest.raises(CatalogueError, match=msg):
        parse_catalogue(text)


def test_select_unknown_kernel_names_the_catalogue():
    with pytest.raises(CatalogueError, match=r"unknown kernel '9\.9'"):
        select(parse_catalogue(GOOD), "9.9")
    with pytest.raises(CatalogueError, match="no kernel"):
        select(parse_catalogue(GOOD), " , ")


def test_pin_a_build_by_package_name():
    cat = parse_catalogue(GOOD)
    spec = pin(cat, "6.1.0-50")
    assert spec is not None
    assert (spec.name, spec.package, spec.suites) == (
        "6.1.0-50", "linux-image-6.1.0-50-amd64", ("bookworm", "bookworm-security"))
    assert spec.expect_release == "6.1.0-50-"
    assert pin(cat, "linux-image-6.1.0-57-amd64").name == "6.1.0-57"
    assert pin(cat, "5.10.0-32") is None  # no 5.10 entry in this catalogue
    assert pin(cat, "6.1") is None and pin(cat, "mine") is None
    assert [k.name for k in select(cat, "6.1,6.1.0-50,6.1.0-50")] == ["6.1", "6.1.0-50"]
    shipped = load_catalogue(DEFAULT_CATALOGUE)
    assert pin(shipped, "6.12.117+deb13").package == "linux-image-6.12.117+deb13-amd64"
    assert pin(shipped, "5.10.0-32").suites == ("bullseye", "bullseye-security")


def test_local_entry_needs_no_modules():
    cat = parse_catalogue("[own]\nsource = local\nvmlinuz = /tmp/bzImage\n")
    assert cat["own"].modules == ""


def test_security_suites_use_the_security_archive():
    text = sources_list(("bookworm", "bookworm-security"))
    lines = text.splitlines()
    assert lines[0].endswith("/debian bookworm main")
    assert lines[1].endswith("/debian-security bookworm-security main")


MADISON = """\
linux-image-6.1.0-57-amd64 |  6.1.192-3 | SEC bookworm-security/main amd64 Packages
linux-image-6.1.0-50-amd64 |  6.1.176-1 | MAIN bookworm/main amd64 Packages
linux-image-6.1.0-50-amd64 |  6.1.176-1 | SEC bookworm-security/main amd64 Packages
linux-image-6.1.0-9-amd64 |  6.1.27-1 | MAIN bookworm/main amd64 Packages
linux-image-6.1.0-55-amd64 |  6.1.192-1 | SEC bookworm-security/main amd64 Packages
linux-image-6.1.0-56-amd64 | 6.1.192-2 | SEC bookworm-security/main amd64 Packages
linux | 6.1.192-3 | SEC bookworm-security/main Sources
"""


def test_builds_of_a_series_oldest_first():
    main = "http://deb.debian.org/debian"
    text = MADISON.replace("SEC ", f"{main}-security ").replace("MAIN ", f"{main} ")
    builds = sort_builds(parse_madison(text))
    assert [b.abi for b in builds] == ["6.1.0-9", "6.1.0-50", "6.1.0-55", "6.1.0-56", "6.1.0-57"]
    # a build in both the suite and its security archive is listed once
    assert builds[1] == Build("linux-image-6.1.0-50-amd64", "6.1.176-1", "bookworm")
    assert builds[-1].suite == "bookworm-security"


@pytest.mark.parametrize("package, series", [
    ("linux-image-6.1.0-50-amd64", "6.1"), ("linux-image-6.12.117+deb13-amd64", "6.12"),
    ("linux-image-5.10.0-32-amd64", "5.10"), ("linux-image-6.1.0-50-cloud-amd64", ""),
    ("linux-image-6.1.0-50-amd64-dbg", ""), ("linux-image-6.1.0-0.deb11.48-amd64", ""),
    ("linux-image-amd64", ""), ("linux-image-6.1-amd64", ""),
])
def test_image_series(package, series):
    assert image_series(package) == series


def fake_bzimage(version: bytes) -> bytes:
    image = bytearray(0x4000)
    image[0x202:0x206] = b"HdrS"
    at = 0x3000
    image[0x20E:0x210] = (at - 0x200).to_bytes(2, "little")
    image[at:at + len(version) + 1] = version + b"\0"
    return bytes(image)


def test_bzimage_release(tmp_path):
    img = tmp_path / "bzImage"
    img.write_bytes(fake_bzimage(b"6.1.192 (root@build) #1 SMP PREEMPT_DYNAMIC Tue"))
    assert bzimage_release(img) == "6.1.192"
    img.write_bytes(b"\0" * 0x4000)
    assert bzimage_release(img) == ""
    assert bzimage_release(tmp_path / "missing") == ""


def test_parse_stanza_and_depends():
    st = parse_stanza("Package: linux-image-amd64\nVersion: 7.2.13-1\n"
                      "Depends: linux-base-amd64,\n linux-image-7.2.13+deb14-amd64 (= 7.2.13-1)\n"
                      "SHA256: abc\n")
    assert st["Version"] == "7.2.13-1"
    assert depends_names(st["Depends"]) == ["linux-base-amd64", "linux-image-7.2.13+deb14-amd64"]
    assert depends_names("dracut | initramfs-tools (>= 0.120), linux-binary-7.2 (= 1)") == [
        "dracut", "initramfs-tools", "linux-binary-7.2"]


def test_locate_old_and_new_layouts(tmp_path):
    old = tmp_path / "old"
    (old / "lib/modules/6.1.0-50-amd64/kernel").mkdir(parents=True)
    (old / "boot").mkdir()
    (old / "boot/vmlinuz-6.1.0-50-amd64").write_bytes(b"k")
    rel, vml, mods = locate(old)
    assert rel == "6.1.0-50-amd64" and vml.name == "vmlinuz-6.1.0-50-amd64"
    new = tmp_path / "new"
    (new / "usr/lib/modules/7.2.13+deb14-amd64/kernel").mkdir(parents=True)
    (new / "usr/lib/modules/7.2.13+deb14-amd64/vmlinuz").write_bytes(b"k")
    rel, vml, mods = locate(new)
    assert rel == "7.2.13+deb14-amd64" and vml.parent == mods


def fake_module(info: dict[str, str]) -> bytes:
    """A minimal ELF64 LE file with a .modinfo section (all that kmod.modinfo reads)."""
    shstr = b"\0.modinfo\0.shstrtab\0"
    body = b"".join(f"{k}={v}".encode() + b"\0" for k, v in info.items())
    hdr = bytearray(64)
    hdr[:6] = b"\x7fELF\x02\x01"
    data_off = 64
    shstr_off = data_off + len(body)
    shoff = shstr_off + len(shstr)
    struct.pack_into("<Q", hdr, 0x28, shoff)
    struct.pack_into("<HHH", hdr, 0x3A, 64, 3, 2)

    def sh(name, off, size):
        return struct.pack("<IIQQQQIIQQ", name, 1, 0, 0, off, size, 0, 0, 1, 0)

    return (bytes(hdr) + body + shstr + sh(0, 0, 0) + sh(1, data_off, len(body))
            + sh(10, shstr_off, len(shstr)))


def test_modinfo_and_dependency_order(tmp_path):
    kdir = tmp_path / "kernel"
    kdir.mkdir()
    (kdir / "9p.ko.xz").write_bytes(lzma.compress(fake_module({"depends": "9pnet,netfs"})))
    (kdir / "9pnet.ko").write_bytes(fake_module({"depends": ""}))
    (kdir / "netfs.ko").write_bytes(fake_module({"depends": "9pnet"}))
    (kdir / "ext4.ko").write_bytes(fake_module({"depends": "", "softdep": "pre: crc32c-intel"}))
    (kdir / "crc32c-intel.ko").write_bytes(fake_module({}))
    assert modinfo(read_module(kdir / "9p.ko.xz"))["depends"] == ["9pnet,netfs"]
    index = {canon(p.name.split(".ko")[0]): p for p in kdir.iterdir()}
    order, builtin, blobs = resolve(index, ["virtio_pci", "9p", "ext4"])
    assert order == ["9pnet", "netfs", "9p", "crc32c_intel", "ext4"]
    assert builtin == ["virtio_pci"]
    assert blobs["9p"].startswith(b"\x7fELF")


def test_cpio_newc_entries_are_aligned():
    w = CpioWriter()
    w.dir("bin")
    w.file("init", b"#!/bin/sh\n", 0o755)
    w.chardev("dev/console", 5, 1)
    data = w.finish()
    assert data.startswith(b"070701")
    assert len(data) % 4 == 0
    assert b"TRAILER!!!" in data
    # the file's data starts 4-byte aligned right after its padded name
    i = data.index(b"init\0")
    start = (i + 5 + 3) // 4 * 4
    assert data[start:start + 10] == b"#!/bin/sh\n"
