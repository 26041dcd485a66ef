# SPDX-License-Identifier: GPL-2.0-only
"""The kernel catalogue: kernel name -> where its vmlinuz and modules come from."""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from . import VMS_DIR

DEFAULT_CATALOGUE = VMS_DIR / "kernels.cfg"
DEFAULT_KERNELS = ("5.10", "6.1", "6.12", "7.2", "host")
SOURCES = ("debian", "local", "host")


class CatalogueError(ValueError):
    """The catalogue file or a kernel selection is invalid."""


@dataclass(frozen=True)
class KernelSpec:
    name: str
    source: str  # debian | local | host
    suite: str = ""  # one or more Debian suites, e.g. "bookworm bookworm-security"
    package: str = ""
    vmlinuz: str = ""
    modules: str = ""  # may be empty for source=local: everything built in
    expect_release: str = ""
    note: str = ""
    version: str = ""  # an exact package version (history mode); empty: the newest

    @property
    def suites(self) -> tuple[str, ...]:
        """The suites a debian entry resolves across (apt picks the newest version among them)."""
        return tuple(s for s in re.split(r"[\s,]+", self.suite) if s)

    @property
    def series(self) -> str:
        """'6.1' for expect_release '6.1.' (the upstream series the entry stands for)."""
        m = re.match(r"(\d+\.\d+)", self.expect_release)
        return m.group(1) if m else ""


def parse_catalogue(text: str) -> dict[str, KernelSpec]:
    """Parse catalogue text (INI). Raises CatalogueError on missing or unknown keys."""
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    try:
        cp.read_string(text)
    except configparser.Error as e:
        raise CatalogueError(str(e)) from e
    known = {"source", "suite", "package", "vmlinuz", "modules", "expect_release", "note"}
    out: dict[str, KernelSpec] = {}
    for name in cp.sections():
        sec = cp[name]
        unknown = set(sec) - known
        if unknown:
            raise CatalogueError(f"[{name}]: unknown keys {sorted(unknown)}")
        source = sec.get("source", "")
        if source not in SOURCES:
            raise CatalogueError(f"[{name}]: source must be one of {SOURCES}, got {source!r}")
        if source == "debian" and not (sec.get("suite") and sec.get("package")):
            raise CatalogueError(f"[{name}]: source=debian needs suite and package")
        if source == "local" and not sec.get("vmlinuz"):
            raise CatalogueError(f"[{name}]: source=local needs vmlinuz")
        if "/" in name or name in (".", ".."):
            raise CatalogueError(f"[{name}]: a kernel name is used as a directory name")
        out[name] = KernelSpec(
            name=name,
            source=source,
            suite=sec.get("suite", ""),
            package=sec.get("package", ""),
            vmlinuz=os.path.expanduser(sec.get("vmlinuz", "")),
            modules=os.path.expanduser(sec.get("modules", "")),
            expect_release=sec.get("expect_release", ""),
            note=sec.get("note", ""),
        )
    return out


def load_catalogue(path: Path = DEFAULT_CATALOGUE) -> dict[str, KernelSpec]:
    return parse_catalogue(Path(path).read_text())


# A Debian build named by its ABI ("6.1.0-50", "6.12.117+deb13") or its image package.
_PIN = re.compile(r"^(?:linux-image-)?((\d+)\.(\d+)\.\d+(?:-\d+|\+deb\d+))(?:-amd64)?$")


def pin(catalogue: dict[str, KernelSpec], name: str) -> KernelSpec | None:
    """A catalogue entry for one Debian build named by package ("6.1.0-50"), resolved in the
    suites of the debian entry of its series (6.1 -> bookworm, bookworm-security). None if *name*
    is not such a name or no entry has its series."""
    m = _PIN.match(name)
    if not m:
        return None
    abi, series = m.group(1), f"{m.group(2)}.{m.group(3)}"
    for entry in catalogue.values():
        if entry.source == "debian" and entry.series == series:
            return replace(entry, name=abi, package=f"linux-image-{abi}-amd64",
                           expect_release=f"{abi}-", note=f"{entry.note}: build {abi}".strip(": "))
    return None


def select(catalogue: dict[str, KernelSpec], names: str | list[str]) -> list[KernelSpec]:
    """Pick kernels by a comma-separated list (order kept, duplicates dropped): catalogue names,
    or Debian builds pinned by package name (see pin)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    picked: list[KernelSpec] = []
    for n in names:
        if not n:
            continue
        spec = catalogue.get(n) or pin(catalogue, n)
        if spec is None:
            raise CatalogueError(f"unknown kernel {n!r}; catalogue has {', '.join(catalogue)}, "
                                 "or name a Debian build of one of its series (e.g. 6.1.0-50)")
        if spec not in picked:
            picked.append(spec)
    if not picked:
        raise CatalogueError("no kernel selected")
    return picked


@dataclass(frozen=True)
class HostKernel:
    release: str
    vmlinuz: Path | None  # None when this machine has no bootable image of its own kernel
    modules: Path | None

    @property
    def bootable(self) -> bool:
        return self.vmlinuz is not None and self.modules is not None


def host_kernel() -> HostKernel:
    """The running kernel, and whether its image and modules exist to boot it in a VM."""
    release = os.uname().release
    vmlinuz = Path(f"/boot/vmlinuz-{release}")
    modules = Path(f"/lib/modules/{release}")
    return HostKernel(
        release=release,
        vmlinuz=vmlinuz if vmlinuz.is_file() and os.access(vmlinuz, os.R_OK) else None,
        modules=modules if (modules / "modules.dep").is_file() else None,
    )
