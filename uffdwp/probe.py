# SPDX-License-Identifier: GPL-2.0-only
"""What the running kernel offers: the negotiated API, per memory type, access and huge pages."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import asdict, dataclass, field

from . import kernel_facts as kf
from .errors import MemoryUnavailableError, UffdError
from .kernel_facts import Feature, RegisterMode
from .kernel_version import KernelVersion, at_least, running
from .memory import MEMORY_TYPES, allocate, hugepage_size, hugepages_free
from .uffd import DEV_USERFAULTFD, Userfaultfd


@dataclass
class OpenResult:
    ok: bool
    error: str = ""


@dataclass
class ProbeResult:
    kernel: dict
    api: dict
    features: int
    feature_names: list[str]
    ioctls: int
    ioctl_names: list[str]
    feature_table: list[dict]
    register: dict  # memtype -> mode -> {"ioctls": int, "names": [...]} or {"error": str}
    access: dict
    open: dict
    hugepages: dict
    errors: list[str] = field(default_factory=list)
    # advertised bits kernel_facts does not know, and features mainline had by this release
    # that are not advertised (a distro config can explain them: shown, not hidden)
    unknown_feature_bits: list[int] = field(default_factory=list)
    below_mainline: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def kernel_info() -> dict:
    u = os.uname()
    return {"release": u.release, "version": u.version, "machine": u.machine}


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def access_info() -> dict:
    dev: dict = {"path": DEV_USERFAULTFD, "exists": os.path.exists(DEV_USERFAULTFD)}
    if dev["exists"]:
        st = os.stat(DEV_USERFAULTFD)
        dev.update(mode=oct(stat.S_IMODE(st.st_mode)), uid=st.st_uid, gid=st.st_gid,
                   accessible=os.access(DEV_USERFAULTFD, os.R_OK | os.W_OK))
    sysctl = _read("/proc/sys/vm/unprivileged_userfaultfd")
    return {
        "euid": os.geteuid(),
        "unprivileged_userfaultfd": None if sysctl is None else int(sysctl),
        "dev_userfaultfd": dev,
        # With the sysctl at 0, an unprivileged process may only open user-mode-only fds.
        "user_mode_only_needed": os.geteuid() != 0 and sysctl == "0",
    }


def _try_open(**kwargs) -> OpenResult:
    try:
        Userfaultfd.open(**kwargs).close()
        return OpenResult(True)
    except UffdError as exc:
        return OpenResult(False, str(exc))


def register_ioctls(features: Feature) -> dict:
    """Per memory type and mode, the ioctls UFFDIO_REGISTER returns (or why it failed)."""
    result: dict = {}
    for memtype in MEMORY_TYPES:
        try:
            region = allocate(memtype, pages=1)
        except MemoryUnavailableError:
            result[memtype] = {"unavailable": f"no free huge pages (vm.nr_hugepages="
                                              f"{hugepage_info()['nr_hugepages']})"}
            continue
        except OSError as exc:
            result[memtype] = {"unavailable": str(exc)}
            continue
        with region:
            modes: dict = {}
            for mode in RegisterMode:
                try:
                    with Userfaultfd.create(features) as uffd:
                        ioctls = uffd.register(region.address, region.length, mode)
                    modes[mode.name] = {"ioctls": int(ioctls), "names": kf.ioctl_names(ioctls)}
                except UffdError as exc:
                    modes[mode.name] = {"error": errno.errorcode.get(exc.errno, str(exc.errno))}
            result[memtype] = modes
    return result


def hugepage_info() -> dict:
    return {"size": hugepage_size(), "free": hugepages_free(),
            "nr_hugepages": int(_read("/proc/sys/vm/nr_hugepages") or 0)}


def below_mainline(features: int, kv: KernelVersion | None) -> list[str]:
    """The features mainline had by *kv*'s release that *features* does not advertise."""
    return [f.name for f in kf.FEATURE_FACTS if at_least(kv, f.since) and not features & f.value]


def feature_table(features: int) -> list[dict]:
    return [{"name": f.name, "bit": f.value.bit_length() - 1, "since": f.since,
             "present": bool(features & f.value), "source": f.source, "note": f.note}
            for f in kf.FEATURE_FACTS]


def probe(with_register: bool = True) -> ProbeResult:
    """Everything `uffdwp probe` reports. Never raises for a kernel that lacks userfaultfd:
    the reasons end up in .errors and .open."""
    errors: list[str] = []
    opens = {
        "syscall": _try_open(via="syscall"),
        "dev": _try_open(via="dev"),
        "user_mode_only": _try_open(via="syscall", user_mode_only=True),
    }
    features = Feature(0)
    api: dict = {}
    try:
        with Userfaultfd.open(via="auto") as uffd:
            res = uffd.api(0)
        features = res.features
        api = {"api": res.api, "features": int(res.features), "ioctls": int(res.ioctls)}
    except UffdError as exc:
        errors.append(str(exc))
    ioctls = api.get("ioctls", 0)
    return ProbeResult(
        kernel=kernel_info(),
        api=api,
        features=int(features),
        feature_names=kf.feature_names(features),
        ioctls=ioctls,
        ioctl_names=kf.ioctl_names(ioctls),
        feature_table=feature_table(features),
        register=register_ioctls(features) if with_register and api else {},
        access=access_info(),
        open={k: asdict(v) for k, v in opens.items()},
        hugepages=hugepage_info(),
        errors=errors,
        unknown_feature_bits=kf.unknown_feature_bits(features) if api else [],
        below_mainline=below_mainline(features, running()) if api else [],
    )
