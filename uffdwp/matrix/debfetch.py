"""Fetch Debian kernel packages into vms/cache/, verify them, and unpack them with dpkg -x.

apt runs with a private state directory per suite (vms/cache/apt/<suite>/), so the host's own
apt configuration and package lists are left alone. apt verifies the signed Release file and the
Packages index; we check each .deb's sha256 against that index once more before unpacking (a
partial file from an interrupted download must never be unpacked).
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
    modules: Path  # .../lib/modules/<release>
    package: str = ""
    version: str = ""


class SuiteApt:
    """apt-get / apt-cache bound to one Debian suite and a private state directory."""

    def __init__(self, suite: str, cache_dir: Path = CACHE_DIR, mirror: str = MIRROR):
        self.suite = suite
        self.root = cache_dir / "apt" / suite
        self.mirror = mirror

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
        src = f"deb [arch=amd64 signed-by={KEYRING}] {self.mirror} {self.suite} main\n"
        (self.root / "sources.list").write_text(src)

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

    def show(self, package: str) -> dict[str, str]:
        """The candidate stanza of a package (first stanza apt-cache prints)."""
        p = subprocess.run(["apt-cache", *self._opts(), "show", "--no-all-versions", package],
                           capture_output=True, text=True)
        if p.returncode != 0 or not p.stdout.strip():
            raise FetchError(f"{package} not found in {self.suite}: {p.stderr.strip()}")
        return parse_stanza(p.stdout.split("\n\n")[0])

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


def kernel_packages(apt: SuiteApt, package: str) -> list[dict[str, str]]:
    """The stanzas to unpack for a kernel: the image package and, where the image is split
    (sid: linux-binary-*, linux-modules-*), its parts. A metapackage is followed to its image."""
    st = apt.show(package)
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
    apt = SuiteApt(spec.suite, cache_dir)
    resolved_file = cache_dir / "kernels" / f"{spec.suite}_{spec.package}.json"
    try:
        apt.update()
        stanzas = kernel_packages(apt, spec.package)
    except FetchError:
        # offline: fall back to what was unpacked last time
        if resolved_file.exists():
            info = json.loads(resolved_file.read_text())
            tree = Path(info["tree"])
            if (tree / ".complete").exists():
                log(f"[{spec.name}] index unreachable; using cached {info['package']}")
                release, vmlinuz, mods = locate(tree)
                return KernelFiles(spec.name, release, vmlinuz, mods,
                                   info["package"], info["version"])
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
    return KernelFiles(spec.name, release, vmlinuz, mods, image["Package"], image["Version"])


def kernel_files(spec: KernelSpec, cache_dir: Path = CACHE_DIR, log=print) -> KernelFiles:
    """Kernel files for a debian or local catalogue entry."""
    if spec.source == "debian":
        return fetch_debian(spec, cache_dir, log)
    if spec.source == "local":
        mods = Path(spec.modules)
        vml = Path(spec.vmlinuz)
        if not vml.is_file() or not (mods / "modules.dep").is_file():
            raise FetchError(f"[{spec.name}] {vml} or {mods}/modules.dep missing")
        return KernelFiles(spec.name, mods.name, vml, mods)
    raise FetchError(f"[{spec.name}] source {spec.source} has no kernel files")
