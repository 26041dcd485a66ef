# SPDX-License-Identifier: GPL-2.0-only
"""What a Debian kernel's package changelog says about each known bug's fix.

Debian's linux changelog (changelog.Debian.gz in the image package) lists, per upload, the
upstream stable releases it merged ("New upstream stable update: .../ChangeLog-6.1.191") and,
under each, the commit subjects it took, CVE ids appended. A fix is *named* when its subject or
its CVE appears (and no later "Revert" of it). A fix that is not named may still be in: it came
with the upstream release itself (mainline), or the changelog names an upstream version at or
past the fix of the kernel's stable series. Both answers are independent of the suite's
verdict, which is what makes the cross-check worth having.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..known_bugs import FIX_NAMES, KNOWN_BUGS
from ..runner.verdicts import KernelVersion, fix_status

Status = Literal["named", "reverted", "by-version", "not-named", "unknown"]

_STABLE_URL = re.compile(r"ChangeLog-(\d+\.\d+(?:\.\d+)?)\b")
_UPSTREAM = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(~rc\d+)?")
_CVE = re.compile(r"CVE-\d{4}-\d+")


@dataclass(frozen=True)
class Item:
    """One change of an upload: its text (continuation lines joined), the package version of
    the upload, and the upstream stable release it came with ("" when none is named)."""

    text: str
    upload: str
    stable: str = ""


@dataclass(frozen=True)
class Changelog:
    version: str  # the newest upload's package version, e.g. 6.1.192-3 (or 6.1.192+3, signed)
    upstream: KernelVersion | None  # the upstream release that version packages
    stable_releases: tuple[str, ...]  # every upstream stable release an upload names, newest first
    items: tuple[Item, ...]


@dataclass(frozen=True)
class FixEvidence:
    bug: str
    status: Status
    detail: str

    @property
    def fixed(self) -> bool | None:
        """What the changelog says: the fix is in (True), is not (False), cannot tell (None)."""
        return {"named": True, "by-version": True, "reverted": False,
                "not-named": False}.get(self.status)

    def as_dict(self) -> dict:
        return {"bug": self.bug, "status": self.status, "fixed": self.fixed,
                "detail": self.detail}


def upstream_version(package_version: str) -> KernelVersion | None:
    """6.1.192-3 -> 6.1.192; 7.3~rc2-1~exp1 -> 7.3-rc."""
    m = _UPSTREAM.match(package_version)
    if not m:
        return None
    sub = int(m.group(3)) if m.group(3) else 0
    return KernelVersion(int(m.group(1)), int(m.group(2)), sub, rc=bool(m.group(4)))


def _items(upload: str, lines: list[str]) -> list[Item]:
    """Change lines of one upload -> items ("* x" and "- x" start one; deeper-indented lines
    continue it); each item under a "New upstream stable update" keeps that release."""
    out: list[tuple[str, str]] = []
    stable = ""
    indent_of_stable = -1
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("[ "):  # blank, or "[ Maintainer Name ]"
            continue
        indent = len(line) - len(line.lstrip())
        url = _STABLE_URL.search(stripped)
        if url and stripped.startswith("http"):
            stable = url.group(1)
            continue
        if stripped[:2] in ("* ", "- "):
            if indent <= indent_of_stable or stripped.startswith("* "):
                # a new top-level change: it is no longer under the stable release
                stable, indent_of_stable = "", -1
            if stripped.lower().startswith("* new upstream stable update"):
                indent_of_stable = indent
            out.append((stripped[2:].strip(), stable))
        elif out:
            out[-1] = (out[-1][0] + " " + stripped, out[-1][1])
    return [Item(text, upload, st) for text, st in out]


def parse(text: str) -> Changelog:
    """Parse a Debian changelog (python-debian's parser, lenient about old entries)."""
    from debian.changelog import Changelog as DebChangelog

    cl = DebChangelog(text, strict=False)
    blocks = list(cl)
    items: list[Item] = []
    releases: list[str] = []
    for block in blocks:
        upload = str(block.version)
        for line in block.changes():
            for m in _STABLE_URL.finditer(line):
                if m.group(1) not in releases:
                    releases.append(m.group(1))
        items += _items(upload, block.changes())
    version = str(blocks[0].version) if blocks else ""
    return Changelog(version, upstream_version(version), tuple(releases), tuple(items))


def read(path: Path) -> Changelog:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return parse(data.decode("utf-8", "replace"))


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def evidence(cl: Changelog, key: str) -> FixEvidence:
    """What the changelog says about the fix of known bug *key*."""
    bug = KNOWN_BUGS[key]
    names = FIX_NAMES.get(key, ())
    subjects = [_norm(n) for n in names if not _CVE.fullmatch(n)]
    cves = [n for n in names if _CVE.fullmatch(n)]
    # items run newest first: the newest mention decides (a later revert undoes the fix)
    for item in cl.items:
        text = _norm(item.text)
        if not (any(s in text for s in subjects) or any(c in item.text for c in cves)):
            continue
        if text.startswith('revert "'):
            return FixEvidence(key, "reverted", f"reverted in {item.upload}: {item.text}")
        where = item.upload + (f" (upstream {item.stable})" if item.stable else "")
        return FixEvidence(key, "named", f"named in {where}: {item.text}")
    kv = cl.upstream
    if kv is None:
        return FixEvidence(key, "unknown", "not named; the changelog names no upstream version")
    status = fix_status(bug, kv)
    ports = f", backports {', '.join(bug.backports)}" if bug.backports else ""
    if status == "fixed":
        return FixEvidence(key, "by-version", f"not named; upstream {kv} has it (fixed in "
                                              f"{bug.fixed_in}{ports})")
    if status == "unfixed":
        return FixEvidence(key, "not-named", f"not named; upstream {kv} predates the fix "
                                             f"(fixed in {bug.fixed_in}{ports})")
    return FixEvidence(key, "unknown", f"not named; upstream {kv} against fixed in "
                                       f"{bug.fixed_in}{ports}: cannot tell")


def all_evidence(cl: Changelog) -> dict[str, FixEvidence]:
    return {key: evidence(cl, key) for key in KNOWN_BUGS}
