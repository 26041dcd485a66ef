# SPDX-License-Identifier: GPL-2.0-only
"""Why tests were skipped, by cause: a kernel feature the kernel lacks (with the release that
brought it), a capability this run lacks (root, permissions), or the environment (no swap, one
NUMA node, THP off, ...), or a precondition the test could not meet on this machine (a race
window it never exercised: runner/precondition.py), or a case that does not apply to this kernel
(one that tests a refusal where the kernel has what is refused: its reason starts with
NOT_APPLICABLE).

The suites word their skip reasons freely, and one missing feature shows up under many reasons
("feature WP_HUGETLBFS_SHMEM (mainline 5.19) absent on this kernel", "... absent: shmem/hugetlb
cannot be write-protected", ...): the feature is found by the kernel_facts name the reason
names, so that all of them count under one cause.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from .. import kernel_facts as kf
from .precondition import PREFIX as PRECONDITION

NOT_APPLICABLE = "not applicable: "
KINDS = ("feature", "capability", "environment", "precondition", "not-applicable")
KIND_TITLES = {"feature": "kernel lacks a feature", "capability": "run lacks a capability",
               "environment": "environment",
               "precondition": "precondition not met (this machine did not get the test there)",
               "not-applicable": "not applicable (a case for kernels without what this one has)"}

# Every name kernel_facts knows, with the mainline release that brought it; longest first so
# that WP_HUGETLBFS_SHMEM wins over a shorter name inside it.
_FACTS: dict[str, str] = {}
for _fact in (*kf.FEATURE_FACTS, *kf.MODE_FACTS, *kf.ACCESS_FACTS, *kf.PAGEMAP_FACTS):
    _FACTS.setdefault(_fact.name, _fact.since)
for _ioctl in kf.IOCTL_FACTS:
    _FACTS.setdefault(_ioctl.name, _ioctl.since)
_NAMES = sorted(_FACTS, key=len, reverse=True)
_NAME_RE = re.compile(r"(?<![\w/.])(" + "|".join(re.escape(n) for n in _NAMES) + r")(?![\w])")
_LACKS = re.compile(r"\b(absent|unsupported|not reported|rejected|lacks|missing)\b", re.I)
_CAPABILITY = re.compile(r"\bneeds? root\b|\bCAP_[A-Z_]+\b|\bEPERM\b|\bEACCES\b|permission",
                         re.I)


@dataclass(frozen=True)
class Cause:
    kind: str  # one of KINDS
    name: str  # the feature's name, or the reason itself
    since: str = ""  # mainline release of a feature


# A temporary file's random suffix (mkstemp's 8 characters) would split one cause into many.
_TEMP_NAME = re.compile(r"(/[\w./-]*?[-_.])[a-z0-9_]{8}(?=[\s:),]|$)")


def cause_of(reason: str) -> Cause:
    reason = " ".join((reason or "").split()) or "(no reason given)"
    reason = _TEMP_NAME.sub(r"\1XXXXXXXX", reason)
    if reason.startswith(PRECONDITION):  # its name, without the attempts' figures
        return Cause("precondition", reason.removeprefix(PRECONDITION).split(" (", 1)[0])
    if reason.startswith(NOT_APPLICABLE):
        return Cause("not-applicable", reason.removeprefix(NOT_APPLICABLE))
    if _LACKS.search(reason):
        m = _NAME_RE.search(reason)
        if m:
            return Cause("feature", m.group(1), _FACTS[m.group(1)])
    if _CAPABILITY.search(reason):
        return Cause("capability", reason)
    return Cause("environment", reason)


@dataclass
class SkipGroup:
    cause: Cause
    tests: list[dict] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)  # the reasons' own words, with counts


def skip_groups(tests: list[dict]) -> list[SkipGroup]:
    """The skipped tests by cause: features first, then capabilities, then the environment;
    within each, the largest group first."""
    groups: dict[Cause, SkipGroup] = {}
    for t in tests:
        if t["verdict"] != "skip":
            continue
        cause = cause_of(t.get("reason", ""))
        group = groups.setdefault(cause, SkipGroup(cause))
        group.tests.append(t)
        group.reasons[t.get("reason") or "(no reason given)"] += 1
    return sorted(groups.values(),
                  key=lambda g: (KINDS.index(g.cause.kind), -len(g.tests), g.cause.name))
