"""The kernel catalogue: kernel name -> where its vmlinuz and modules come from."""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
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
    suite: str = ""
    package: str = ""
    vmlinuz: str = ""
    modules: str = ""
    expect_release: str = ""
    note: str = ""


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
        if source == "local" and not (sec.get("vmlinuz") and sec.get("modules")):
            raise CatalogueError(f"[{name}]: source=local needs vmlinuz and modules")
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


def select(catalogue: dict[str, KernelSpec], names: str | list[str]) -> list[KernelSpec]:
    """Pick kernels by a comma-separated list (order kept, duplicates dropped)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    picked: list[KernelSpec] = []
    for n in names:
        if not n:
            continue
        if n not in catalogue:
            raise CatalogueError(f"unknown kernel {n!r}; catalogue has {', '.join(catalogue)}")
        if catalogue[n] not in picked:
            picked.append(catalogue[n])
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
