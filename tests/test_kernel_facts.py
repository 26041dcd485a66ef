# SPDX-License-Identifier: GPL-2.0-only
"""The kernel facts table against the compiled headers and the system's own uapi headers."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from uffdwp import kernel_facts as kf
from uffdwp._ffi import ffi, lib
from uffdwp.kernel_version import release_number
from uffdwp.known_bugs import KNOWN_BUGS

NEWER_THAN_DEBIAN12 = {
    "UFFD_FEATURE_WP_UNPOPULATED": kf.Feature.WP_UNPOPULATED,
    "UFFD_FEATURE_POISON": kf.Feature.POISON,
    "UFFD_FEATURE_WP_ASYNC": kf.Feature.WP_ASYNC,
    "UFFD_FEATURE_MOVE": kf.Feature.MOVE,
    "UFFDIO_CONTINUE_MODE_WP": kf.MODES["UFFDIO_CONTINUE_MODE_WP"],
    "UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES": kf.MODES["UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES"],
}


@pytest.mark.parametrize("fact", kf.IOCTL_FACTS, ids=lambda f: f.name)
def test_ioctl_numbers_match_compiled_header(fact):
    assert fact.request == getattr(lib, fact.name)
    assert fact.size == ffi.sizeof(f"struct {fact.struct}")


def test_dev_ioctl_matches_header():
    assert kf.USERFAULTFD_IOC_NEW == lib.USERFAULTFD_IOC_NEW


@pytest.mark.parametrize("name", sorted(NEWER_THAN_DEBIAN12))
def test_compat_constants_match_table(name):
    assert getattr(lib, name) == NEWER_THAN_DEBIAN12[name]


def test_feature_enum_and_table_agree():
    assert [f.value for f in kf.FEATURE_FACTS] == [int(f) for f in kf.Feature]
    assert [f.name for f in kf.FEATURE_FACTS] == [f.name for f in kf.Feature]


def test_ioctl_enum_and_table_agree():
    table = {f.name.removeprefix("UFFDIO_"): f.bit for f in kf.IOCTL_FACTS
             if f.name != "PAGEMAP_SCAN"}  # not a userfaultfd ioctl: no bit in .ioctls
    assert {m.name: int(m) for m in kf.Ioctl} == table


@pytest.mark.parametrize(("flag", "prefix"), [
    (kf.RegisterMode, "UFFDIO_REGISTER_MODE_"), (kf.FaultFlag, "UFFD_PAGEFAULT_FLAG_")])
def test_mode_and_flag_enums_and_table_agree(flag, prefix):
    table = {n.removeprefix(prefix): v for n, v in kf.MODES.items() if n.startswith(prefix)}
    assert {m.name: int(m) for m in flag} == table


def _system_header_values(names: list[str]) -> dict[str, int]:
    """Compile against the system headers alone: what they define, they define."""
    body = "\n".join(
        f'#ifdef {n}\n printf("{n} %llu\\n", (unsigned long long)({n}));\n#endif' for n in names)
    src = ("#include <stdio.h>\n#include <linux/userfaultfd.h>\n#include <linux/fs.h>\n"
           f"int main(void) {{\n{body}\n return 0; }}\n")
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler to read the system headers with")
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([cc, "-x", "c", "-", "-o", f"{tmp}/h"], input=src, text=True, check=True)
        out = subprocess.run([f"{tmp}/h"], capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_table_agrees_with_system_header_where_it_has_them():
    names = [f.name for f in kf.IOCTL_FACTS] + ["UFFD_FEATURE_" + f.name for f in kf.Feature]
    names += [n for n in kf.MODES if n.startswith(("UFFDIO_", "UFFD_"))]
    have = _system_header_values(names)
    assert "UFFDIO_API" in have  # any Linux uapi header has it
    expected = {f.name: f.request for f in kf.IOCTL_FACTS}
    expected.update({"UFFD_FEATURE_" + f.name: int(f) for f in kf.Feature})
    expected.update(kf.MODES)
    mismatches = {n: (v, expected[n]) for n, v in have.items() if v != expected[n]}
    assert not mismatches


def test_feature_names_render_unknown_bits():
    assert kf.feature_names(kf.Feature.MOVE | (1 << 40)) == ["MOVE", "BIT(40)"]
    assert kf.ioctl_names(0x8000000000000003) == ["REGISTER", "UNREGISTER", "API"]


def test_known_bugs_describe_their_fix():
    text = KNOWN_BUGS["close-reset"].describe()
    assert "c88033efe9a3" in text and "6.9" in text and "6.8.10" in text


@pytest.mark.parametrize("bug", KNOWN_BUGS.values(), ids=lambda b: b.key)
def test_every_known_bug_has_its_fix_per_series_with_a_source(bug):
    assert len(bug.commit) == 12 and int(bug.commit, 16) >= 0, "the mainline fix, 12 hex digits"
    mainline = release_number(bug.fixed_in)
    assert mainline and mainline[2] is None and bug.source
    seen = set()
    for fix in bug.stable:
        series = release_number(fix.series)
        assert series and series[2] is None and fix.series not in seen and fix.source
        assert series[:2] < mainline[:2], "a stable series older than the mainline fix"
        if fix.release is not None:
            number = release_number(fix.release)
            assert number and number[:2] == series[:2] and number[2] is not None
        seen.add(fix.series)
