# SPDX-License-Identifier: GPL-2.0-only
"""Fetch Debian kernel packages into vms/cache/, verify them, and unpack them with dpkg -x.

apt runs with a private state directory per set of suites (vms/cache/apt/<suite>+<suite>/), so
the host's own apt configuration and package lists are left alone. A catalogue entry names its
suite and that suite's security archive ("bookworm bookworm-security"): apt's candidate is then
the newest build across both, which is what a Debian machine with security updates runs. apt
verifies the signed Release files and the Packages indexes; we check each .deb's sha256 against
that index once more before unpacking (a partial file from an interrupted download must never be
unpacked).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import CACHE_DIR
from .catalogue import KernelSpec

MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"  # the <suite>-security archives
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
LISTS_MAX_AGE = 12 * 3600  # re-read a suite's index at most twice a day


class FetchError(RuntimeError):
    """A kernel package could not be resolved, downloaded, verified or unpacked."""


@dataclass(frozen=True)
class KernelFiles:
    """An unpacked kernel, ready to boot."""

    name: str
    release: str  # e.g. 6.1.0-56-amd64 (the modules directory's name)
    vmlinuz: Path
    modules: Path | None  # .../lib/modules/<release>; None: a kernel with everything built in
    package: str = ""
    version: str = ""
    changelog: Path | None = None  # the package's changelog.Debian.gz, where it ships one


def mirror_of(suite: str) -> str:
    return SECURITY_MIRROR if suite.endswith("-security") else MIRROR


def sources_list(suites: tuple[str, ...]) -> str:
    return "".join(f"deb [arch=amd64 signed-by={KEYRING}] {mirror_of(s)} {s} main\n"
                   for s in suites)


class SuiteApt:
    """apt-get / apt-cache bound to one or more Debian suites and a private state directory."""

    def __init__(self, suites: str | tuple[str, ...], cache_dir: Path = CACHE_DIR):
        self.suites = (suites,) if isinstance(suites, str) else tuple(suites)
        self.suite = " + ".join(self.suites)  # for messages
        self.root = cache_dir / "apt" / "+".join(self.suites)

    def _opts(self) -> list[str]:
        r = self.root
        return [
            "-o", f"Dir::Etc::sourcelist={r / 'sources.list'}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::Lists={r / 'lists'}",
            "-o", f"Dir::Cache={r / 'cache'}",
            "-o", "Dir::State::status=/dev/null",
            "-o", "APT::Architecture=amd64",
            "-o", "APT::Architectures=amd64",
            "-o", "Debug::NoLocking=1",
            # apt-get download as root would otherwise warn that _apt cannot write here
            "-o", "APT::Sandbox::User=root",
            "-o", "Acquire::Languages=none",
            "-q",
        ]

    def prepare(self) -> None:
        for d in ("lists/partial", "cache/archives/partial"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "sources.list").write_text(sources_list(self.suites))

    def lists_fresh(self) -> bool:
        stamp = self.root / "updated"
        return stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE

    def update(self, force: bool = False) -> None:
        self.prepare()
        if not force and self.lists_fresh():
            return
        p = subprocess.run(["apt-get", *self._opts(), "update"], capture_output=True, text=True)
        if p.returncode != 0 or "Err:" in p.stdout:
            raise FetchError(f"apt-get update for {self.suite} failed:\n{p.stdout}{p.stderr}")
        (self.root / "updated").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def show(self, package: str, version: str = "") -> dict[str, str]:
        """The stanza of a package: its candidate (the newest across the suites) or *version*."""
        which = [f"{package}={version}"] if version else ["--no-all-versions", package]
        p = subprocess.run(["apt-cache", *self._opts(), "show", *which],
                           capture_output=True, text=True)
        if p.returncode != 0 or not p.stdout.strip():
            raise FetchError(f"{package}{'=' + version if version else ''} not found in "
                             f"{self.suite}: {p.stderr.strip()}")
        return parse_stanza(p.stdout.split("\n\n")[0])

    def image_builds(self, series: str) -> list[Build]:
        """Every amd64 kernel image build of an upstream series (6.1) the suites still hold."""
        p = subprocess.run(["apt-cache", *self._opts(), "pkgnames", f"linux-image-{series}."],
                           capture_output=True, text=True)
        names = sorted(n for n in p.stdout.split() if image_series(n) == series)
        if not names:
            return []
        p = subprocess.run(["apt-cache", *self._opts(), "madison", *names],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise FetchError(f"apt-cache madison failed in {self.suite}: {p.stderr.strip()}")
        return sort_builds(parse_madison(p.stdout))

    def download(self, package: str, version: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        p = subprocess.run(["apt-get", *self._opts(), "download", f"{package}={version}"],
                           cwd=dest, capture_output=True, text=True)
        if p.returncode != 0:
            raise FetchError(f"apt-get download {package}={version} failed:\n{p.stderr}")
        debs = sorted(dest.glob(f"{package}_*.deb"), key=lambda f: f.stat().st_mtime)
        if not debs:
            raise FetchError(f"apt-get download {package} left no .deb in {dest}")
        return debs[-1]


@dataclass(frozen=True)
class Build:
    """One build of a Debian kernel image package: package + version, and the suite holding it."""

    package: str  # linux-image-6.1.0-50-amd64
    version: str  # 6.1.176-1
    suite: str = ""

    @property
    def abi(self) -> str:
        """'6.1.0-50' (what `--kernels` pins)."""
        return self.package.removeprefix("linux-image-").removesuffix("-amd64")


# flavour amd64 only: not -cloud/-rt/-dbg/-unsigned, not bullseye's 6.1.0-0.deb11.N backports
_IMAGE = re.compile(r"^linux-image-((\d+\.\d+)\.\d+(?:-\d+|\+deb\d+))-amd64$")


def image_series(package: str) -> str:
    """'6.1' for linux-image-6.1.0-50-amd64, '' for anything else (metapackages, flavours)."""
    m = _IMAGE.match(package)
    return m.group(2) if m else ""


def parse_madison(text: str) -> list[Build]:
    """`apt-cache madison` lines ("pkg | version | mirror suite/main amd64 Packages") -> builds,
    each (package, version) once (a build in both a suite and its security archive)."""
    seen: dict[tuple[str, str], Build] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 3 or not parts[2].endswith("Packages"):
            continue
        words = parts[2].split()
        suite = words[1].split("/")[0] if len(words) > 1 else ""
        seen.setdefault((parts[0], parts[1]), Build(parts[0], parts[1], suite))
    return list(seen.values())


def sort_builds(builds: list[Build]) -> list[Build]:
    """Oldest first, by Debian version order (dpkg's rules, through python-debian)."""
    from debian.debian_support import Version

    return sorted(builds, key=lambda b: (Version(b.version), b.package))


def parse_stanza(text: str) -> dict[str, str]:
    """Parse one deb822 stanza (continuation lines joined)."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, val = line.partition(":")
            fields[key] = val.strip()
    return fields


def depends_names(depends: str) -> list[str]:
    """Package names in a Depends field, alternatives flattened, versions dropped."""
    names = []
    for alt in re.split(r"[,|]", depends):
        name = alt.strip().split(" ")[0].split(":")[0]
        if name:
            names.append(name)
    return names


def kernel_packages(apt: SuiteApt, package: str, version: str = "") -> list[dict[str, str]]:
    """The stanzas to unpack for a kernel: the image package and, where the image is split
    (sid: linux-binary-*, linux-modules-*), its parts. A metapackage is followed to its image."""
    st = apt.show(package, version)
    if not re.match(r"linux-image-\d", st["Package"]):
        # a metapackage (linux-image-amd64): follow its Depends to the versioned image
        images = [n for n in depends_names(st.get("Depends", "")) if re.match(r"linux-image-\d", n)]
        if not images:
            raise FetchError(f"{package} in {apt.suite} depends on no linux-image-<ver>")
        st = apt.show(images[0])
    parts = [n for n in depends_names(st.get("Depends", ""))
             if re.match(r"linux-(binary|modules)-\d", n)]
    return [st, *(apt.show(n) for n in parts)]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_changelog(tree: Path) -> Path | None:
    """The Debian changelog an unpacked kernel ships (image, binary or modules package)."""
    for pattern in ("usr/share/doc/linux-image-*/changelog*.gz",
                    "usr/share/doc/linux-*/changelog*.gz"):
        found = sorted(tree.glob(pattern))
        if found:
            return found[0]
    return None


def locate(tree: Path) -> tuple[str, Path, Path]:
    """Find (release, vmlinuz, modules dir) in an unpacked kernel tree (old and new layouts)."""
    for mods_root in (tree / "lib/modules", tree / "usr/lib/modules"):
        if not mods_root.is_dir():
            continue
        for mdir in sorted(mods_root.iterdir()):
            if not (mdir / "kernel").is_dir():
                continue
            release = mdir.name
            for cand in (tree / f"boot/vmlinuz-{release}", mdir / "vmlinuz"):
                if cand.is_file():
                    return release, cand, mdir
    raise FetchError(f"no vmlinuz + modules found under {tree}")


def fetch_debian(spec: KernelSpec, cache_dir: Path = CACHE_DIR, log=print) -> KernelFiles:
    """Resolve, download, verify and unpack a Debian kernel; reuse the cache when possible."""
    apt = SuiteApt(spec.suites, cache_dir)
    key = "+".join(spec.suites) + f"_{spec.package}" + (f"={spec.version}" if spec.version else "")
    resolved_file = cache_dir / "kernels" / f"{key}.json"
    try:
        apt.update()
        stanzas = kernel_packages(apt, spec.package, spec.version)
    except FetchError:
        # offline: fall back to what was unpacked last time
        if resolved_file.exists():
            info = json.loads(resolved_file.read_text())
            tree = Path(info["tree"])
            if (tree / ".complete").exists():
                log(f"[{spec.name}] index unreachable; using cached {info['package']}")
                release, vmlinuz, mods = locate(tree)
                return KernelFiles(spec.name, release, vmlinuz, mods,
                                   info["package"], info["version"], find_changelog(tree))
        raise
    image = stanzas[0]
    tree = cache_dir / "kernels" / f"{image['Package']}_{image['Version']}"
    if not (tree / ".complete").exists():
        debs_dir = cache_dir / "debs"
        if tree.exists():
            shutil.rmtree(tree)
        tree.mkdir(parents=True)
        for st in stanzas:
            fname = Path(st["Filename"]).name
            deb = debs_dir / fname
            if not deb.exists() or sha256_file(deb) != st["SHA256"]:
                log(f"[{spec.name}] downloading {st['Package']} {st['Version']}")
                got = apt.download(st["Package"], st["Version"], debs_dir)
                if got != deb:
                    got.rename(deb)
            digest = sha256_file(deb)
            if digest != st["SHA256"]:
                deb.unlink()
                raise FetchError(f"{fname}: sha256 {digest} != index {st['SHA256']}")
            p = subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)],
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise FetchError(f"dpkg -x {fname} failed: {p.stderr}")
        (tree / ".complete").write_text("\n".join(s["Package"] for s in stanzas) + "\n")
    release, vmlinuz, mods = locate(tree)
    resolved_file.parent.mkdir(parents=True, exist_ok=True)
    resolved_file.write_text(json.dumps({"package": image["Package"], "version": image["Version"],
                                         "tree": str(tree), "release": release}, indent=1))
    return KernelFiles(spec.name, release, vmlinuz, mods, image["Package"], image["Version"],
                       find_changelog(tree))


def bzimage_release(path: Path) -> str:
    """The release a bzImage announces ("6.1.192" of "6.1.192 (user@host) #1 SMP ..."), read
    from its x86 boot header (kernel_version field, Documentation/arch/x86/boot.rst); "" if the
    file is not a bzImage with that field."""
    try:
        with open(path, "rb") as f:
            head = f.read(0x4000)
    except OSError:
        return ""
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return ""
    offset = int.from_bytes(head[0x20E:0x210], "little")
    if not offset:
        return ""
    start = offset + 0x200
    text = head[start:start + 256].split(b"\0", 1)[0].decode("ascii", "replace")
    return text.split(" ", 1)[0]


def local_kernel(spec: KernelSpec) -> KernelFiles:
    """A kernel built from a source tree: a bzImage, and a modules directory if it has modules
    (no modules.dep needed: dependencies are read from the modules themselves)."""
    vml = Path(spec.vmlinuz)
    if not vml.is_file():
        raise FetchError(f"[{spec.name}] kernel image {vml} not found")
    mods = Path(spec.modules) if spec.modules else None
    if mods is not None and not (mods / "kernel").is_dir():
        raise FetchError(f"[{spec.name}] {mods} is not a modules directory (no kernel/ in it)")
    release = bzimage_release(vml) or (mods.name if mods else "") or spec.name
    return KernelFiles(spec.name, release, vml, mods)


def kernel_files(spec: KernelSpec, cache_dir: Path = CACHE_DIR, log=print) -> KernelFiles:
    """Kernel files for a debian or local catalogue entry."""
    if spec.source == "debian":
        return fetch_debian(spec, cache_dir, log)
    if spec.source == "local":
        return local_kernel(spec)
    raise FetchError(f"[{spec.name}] source {spec.source} has no kernel files")
