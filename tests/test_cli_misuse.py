# SPDX-License-Identifier: GPL-2.0-only
"""Bad input to `uffdwp snapshot` and `uffdwp image`: one clear error line, a non-zero exit,
no traceback, no hang, and nothing half-written left behind."""

from __future__ import annotations

import os
import struct
import subprocess

import pytest

from uffdwp.snapshot import image as im
from uffdwp.snapshot.image import ImageError, RegionInfo, build_image, crc32c, load, verify
from uffdwp.snapshot.targets import TargetError, parse_target

from .childproc import assert_clear_error, describe, run_cli, run_python

PS = 4096


@pytest.fixture
def image(tmp_path):
    data = bytes(range(256)) * (8 * PS // 256)
    path = tmp_path / "snap.img"
    path.write_bytes(build_image([(RegionInfo(0x10000, len(data), PS, "anon"), data)]))
    return path


@pytest.mark.parametrize("argv, needle", [
    (["--write-rate", "-5"], "rate"),
    (["--write-rate", "1e30"], "rate"),
    (["--write-rate", "nan"], "rate"),
    (["--writers", "-1"], "--writers"),
    (["--writers", "513"], "--writers"),
    (["--size", "0"], "size"),
    (["--size", "lots"], "size"),
    (["--engine-priority", "1000"], "--engine-priority"),
    (["--timeout", "-1"], "seconds"),
    (["--to", "ftp:snap.img"], "unknown target scheme 'ftp'"),
    (["--to", "ftp://host/x"], "unknown target scheme 'ftp'"),
    (["--to", "fd:x"], "fd target needs a number"),
])
def test_demo_refuses_bad_options(argv, needle, tmp_path):
    proc = run_cli("snapshot", "demo", "--size", "4M", "--no-progress", *argv)
    assert proc.returncode == 2, describe(proc)
    assert_clear_error(proc, needle)
    assert not list(tmp_path.iterdir())


def test_unknown_scheme_writes_no_local_file(tmp_path):
    proc = subprocess.run(["sh", "-c", f"cd {tmp_path} && {os.sys.executable} -m uffdwp "
                           "snapshot demo --size 4M --to ftp:snap.img"], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert proc.returncode == 2, describe(proc)
    assert not (tmp_path / "ftp:snap.img").exists()
    for spec in ("ftp:x", "https://h/x", "s3:bucket/key"):
        with pytest.raises(TargetError, match="unknown target scheme"):
            parse_target(spec)
    assert parse_target("./a:b.img").spec == "file:./a:b.img"  # a path, not a scheme
    assert parse_target("file:a:b.img").path == "a:b.img"


@pytest.mark.parametrize("output, needle", [
    ("/nonexistent/dir/region.raw", "No such file or directory"),
    ("/proc/version", ""),
    ("/", "not a regular file"),
])
def test_extract_to_an_impossible_output(image, output, needle):
    proc = run_cli("image", "extract", str(image), "-o", output)
    assert_clear_error(proc, needle)


def test_extract_onto_a_full_filesystem_leaves_nothing(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    data = os.urandom(4 << 20)
    img = tmp_path / "big.img"
    img.write_bytes(build_image([(RegionInfo(0x10000, len(data), PS, "anon"), data)]))
    mnt = tmp_path / "full"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                         capture_output=True, text=True, check=False)
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
    try:
        proc = run_cli("image", "extract", str(img), "-o", str(mnt / "region.raw"))
        assert_clear_error(proc, "No space left on device")
        assert os.listdir(mnt) == [], "a truncated output was left behind"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_extract_writes_the_region(image, tmp_path):
    out = tmp_path / "region.raw"
    proc = run_cli("image", "extract", str(image), "-o", str(out))
    assert proc.returncode == 0, describe(proc)
    assert out.read_bytes() == load(image).contents[0]
    assert_clear_error(run_cli("image", "extract", str(image), "--region", "3", "-o", str(out)),
                       "region 3")


def test_verify_refuses_a_fifo_and_reads_standard_input(image, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert_clear_error(run_cli("image", "verify", str(fifo), timeout=10), "FIFO")
    with open(image, "rb") as stream:
        proc = subprocess.run([os.sys.executable, "-m", "uffdwp", "image", "verify", "-"],
                              stdin=stream, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert proc.returncode == 0 and "OK" in proc.stdout, describe(proc)


def _crafted(region_length: int, page_size: int = PS) -> bytes:
    """A header that claims *region_length* bytes, its checksum recomputed, and the records
    of an 8-page image after it."""
    data = bytes(8 * PS)
    real = build_image([(RegionInfo(0x10000, len(data), PS, "anon"), data)])
    header_len = im._FIXED.size + im._REGION.size + im._HCRC.size
    body = bytearray(real[:header_len - im._HCRC.size])
    struct.pack_into("<QQI", body, im._FIXED.size, 0x10000, region_length, page_size)
    return bytes(body) + struct.pack("<II", crc32c(bytes(body)), 0) + real[header_len:]


@pytest.mark.parametrize("length, page_size", [
    (1 << 50, PS),             # a petabyte: more than any machine, less than the address space
    ((1 << 64) - PS, PS),      # the whole address space
    (1 << 30, 3 * PS),         # a page size no machine has
    (8 * PS, 0),
])
def test_crafted_header_is_refused_without_allocating_it(length, page_size, tmp_path):
    path = tmp_path / "crafted.img"
    path.write_bytes(_crafted(length, page_size))
    with pytest.raises(ImageError):
        verify(path)
    for command in (["image", "verify"], ["image", "extract", "-o", str(tmp_path / "out.raw")]):
        assert_clear_error(run_cli(*command[:2], str(path), *command[2:]))
    info = run_cli("image", "info", str(path))  # describes what the header says, or why not
    assert info.returncode in (0, 1) and "Traceback" not in info.stderr, describe(info)
    assert not (tmp_path / "out.raw").exists()
    # load() under an address-space limit far below what the header claims: it must refuse
    # before allocating, with ImageError or ValueError, not MemoryError.
    proc = run_python(f"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from uffdwp.snapshot.image import ImageError, load
try:
    load({str(path)!r})
except (ImageError, ValueError) as exc:
    print("refused:", exc)
""")
    assert proc.returncode == 0 and "refused:" in proc.stdout, describe(proc)


def test_a_complete_image_of_more_memory_than_here_is_refused_by_load(tmp_path):
    # 64 records of 2^32-1 zero pages: a valid image of 1 PiB of zeros, 2 KiB on disk
    pages = 64 * ((1 << 32) - 1)
    header = im.ImageHeader([RegionInfo(0, pages * PS, PS, "anon")])
    out, chain = bytearray(header.encode()), 0
    for k in range(64):
        raw = im.pack_record(im.REC_ZERO, 0, k * ((1 << 32) - 1), (1 << 32) - 1, 0)
        out += raw
        chain = crc32c(raw[:28], chain)
    out += im.pack_record(im.REC_END, im.END_REGION, pages, 64, chain)
    path = tmp_path / "petabyte.img"
    path.write_bytes(out)
    assert verify(path).zero_pages == pages
    with pytest.raises(ValueError, match="more than the"):
        load(path)


# --- numbers and paths of every subcommand (issue 14) ------------------------------------------
# Each is refused by argparse before any work: one error line naming the option, exit 2, and
# nothing written (no report directory, no image). {file}: an existing file; {dir}: an existing
# directory; {nope}: a path that does not exist.
BAD_OPTIONS = [
    (["run", "--report", "{file}"], "--report", "not a directory"),
    (["run", "--report", "{file}/sub"], "--report", "not a directory"),
    (["run", "--jobs", "abc"], "--jobs", "'abc'"),
    (["run", "--jobs", "0"], "--jobs", "not 0"),
    (["run", "--jobs", "-3"], "--jobs", "not -3"),
    (["run", "--suites", "{nope}"], "--suites", "no such file"),
    (["matrix", "--report", "{file}", "--kernels", "host"], "--report", "not a directory"),
    (["matrix", "--jobs", "0", "--kernels", "host"], "--jobs", "not 0"),
    (["matrix", "--jobs", "x", "--kernels", "host"], "--jobs", "whole number"),
    (["matrix", "--numa-nodes", "0", "--kernels", "host"], "--numa-nodes", "not 0"),
    (["matrix", "--timeout", "nan", "--kernels", "host"], "--timeout", "'nan'"),
    (["matrix", "--timeout", "inf", "--kernels", "host"], "--timeout", "'inf'"),
    (["matrix", "--timeout", "-5", "--kernels", "host"], "--timeout", "'-5'"),
    (["matrix", "--merge", "{nope}"], "--merge", "no such directory"),
    (["matrix", "--merge", "{file}"], "--merge", "not a directory"),
    (["matrix", "--kernel", "{nope}"], "--kernel", "no such file"),
    (["matrix", "--kernel", "{file}", "--modules", "{nope}"], "--modules", "no such directory"),
    (["snapshot", "demo", "--size", "4M", "--stats-json", "{nope}/x.json"], "--stats-json",
     "no directory"),
    (["snapshot", "demo", "--size", "4M", "--stats-json", "{dir}"], "--stats-json",
     "is a directory"),
    (["wrlat", "--stats", "{nope}"], "--stats", "no such file"),
    (["wrlat", "--stats", "{dir}"], "--stats", "not a file"),
    (["bench", "snapshot", "--size", "4M", "--dir", "{file}"], "--dir", "not a directory"),
    (["bench", "snapshot", "--size", "4M", "--save", "{nope}/x.json"], "--save", "no directory"),
    (["bench", "snapshot", "--size", "4M", "--plots", "{file}"], "--plots", "not a directory"),
    (["bench", "plot", "{file}", "--out", "{file}"], "--out", "not a directory"),
    (["bench", "soak", "--size", "4M", "--dir", "{nope}"], "--dir", "no such directory"),
]


@pytest.mark.parametrize("argv, option, needle", BAD_OPTIONS,
                         ids=[f"{a[0]} {o} {a[a.index(o) + 1]}" for a, o, _ in BAD_OPTIONS])
def test_bad_numbers_and_paths_are_refused_in_one_line(argv, option, needle, tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    paths = {"file": tmp_path / "file", "dir": tmp_path / "dir", "nope": tmp_path / "nope"}
    report = tmp_path / "report"
    argv = [a.format(**paths) for a in argv]
    if argv[0] in ("run", "matrix") and "--report" not in argv and "--merge" not in argv:
        argv += ["--report", str(report)]
    proc = run_cli(*argv, timeout=30)
    assert proc.returncode == 2, describe(proc)
    line = assert_clear_error(proc, option, needle)
    assert line.startswith(f"uffdwp {argv[0]}"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"], "something was written"
