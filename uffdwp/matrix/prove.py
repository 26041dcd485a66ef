# SPDX-License-Identifier: GPL-2.0-only
"""Prove each known bug on real kernels: its tests fail on a kernel without the fix and pass on
one with it. Not for CI (kernel builds and guest runs take an hour or more): a person runs
`vms/prove-known-bugs.sh [BUG ...]`.

Kernels without a fix come from Debian's archive where a build predating the fix is still there
(6.1.0-50 for mremap-clear and close-reset), or are built from Debian's linux-source-6.1 with the
fix reverted: one full build of a minimal config (vms/uffdwp.config), then one incremental build
per reverse patch in vms/reverts/. The unpatched build is the kernel with every fix.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ..known_bugs import KNOWN_BUGS
from . import CACHE_DIR, REPO_ROOT, VMS_DIR
from .catalogue import KernelSpec, load_catalogue, select
from .crosscheck import bug_verdicts
from .debfetch import FetchError, SuiteApt, sha256_file

SOURCE_PACKAGE = "linux-source-6.1"
SOURCE_SUITES = ("bookworm", "bookworm-security")
SRC = "src-6.1"  # the linux-source-6.1 build with every fix
REVERTS = VMS_DIR / "reverts"
PROOF_DIR = CACHE_DIR / "proof"


@dataclass(frozen=True)
class Proof:
    bug: str
    without: str  # a catalogue name, a pinned Debian build, SRC, or f"{SRC}-no-{bug}"
    with_fix: str
    numa_nodes: int = 1
    how: str = ""


def revert(bug: str) -> str:
    return f"{SRC}-no-{bug}"


PROOFS: tuple[Proof, ...] = (
    Proof("mremap-clear", "6.1.0-50", "6.1", how="Debian 6.1.0-50 (6.1.176) predates 6.1.191"),
    Proof("close-reset", "6.1.0-50", "6.1", how="Debian 6.1.0-50 (6.1.176) predates 6.1.191"),
    Proof("hugetlb-fork", "6.1", "6.12", how="never backported to 6.1"),
    Proof("hugetlb-unshare", "6.1", "6.12", how="never backported to 6.1"),
    Proof("unuse-pte-bits", "5.10", "6.1", how="fixed in 5.19, never backported to 5.10"),
    Proof("swp-uffd-wp-bit", revert("swp-uffd-wp-bit"), SRC, how="vms/reverts/"),
    Proof("fork-special-cases", revert("fork-special-cases"), SRC, how="vms/reverts/"),
    Proof("unregister-reset", revert("unregister-reset"), SRC, how="vms/reverts/"),
    Proof("shmem-writenotify", revert("shmem-writenotify"), SRC, how="vms/reverts/"),
    Proof("hugetlb-cow-wp", revert("hugetlb-cow-wp"), SRC, how="vms/reverts/"),
    # a THP migrates only between NUMA nodes: the guests get two
    Proof("thp-migration", revert("thp-migration"), SRC, numa_nodes=2, how="vms/reverts/"),
)


# --- the source tree and its builds -------------------------------------------------------------
def fetch_source(log) -> Path:
    """linux-source-6.1 (newest across bookworm and its security archive), unpacked once."""
    apt = SuiteApt(SOURCE_SUITES)
    apt.update()
    st = apt.show(SOURCE_PACKAGE)
    tree = CACHE_DIR / "src" / SOURCE_PACKAGE
    stamp = tree / ".uffdwp-package-version"
    if stamp.exists() and stamp.read_text().strip() == st["Version"]:
        return tree
    debs = CACHE_DIR / "debs"
    deb = debs / Path(st["Filename"]).name
    if not deb.exists() or sha256_file(deb) != st["SHA256"]:
        log(f"downloading {SOURCE_PACKAGE} {st['Version']}")
        got = apt.download(SOURCE_PACKAGE, st["Version"], debs)
        if got != deb:
            got.rename(deb)
    if sha256_file(deb) != st["SHA256"]:
        raise FetchError(f"{deb.name}: sha256 differs from the index")
    log(f"unpacking {deb.name}")
    if tree.exists():
        shutil.rmtree(tree)
    tree.parent.mkdir(parents=True, exist_ok=True)
    tarball = f"./usr/src/{SOURCE_PACKAGE}.tar.xz"
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as p1:
        subprocess.run(["tar", "-xO", tarball], stdin=p1.stdout, check=True,
                       stdout=open(tree.parent / f"{SOURCE_PACKAGE}.tar.xz", "wb"))  # noqa: SIM115
    subprocess.run(["nice", "-n", "15", "tar", "-xJf", f"{SOURCE_PACKAGE}.tar.xz"],
                   cwd=tree.parent, check=True)
    stamp.write_text(st["Version"] + "\n")
    return tree


def _patch(tree: Path, patch: Path, *args: str) -> bool:
    p = subprocess.run(["patch", "-p1", "-s", "--no-backup-if-mismatch", *args, "-i", str(patch)],
                       cwd=tree, capture_output=True, text=True)
    return p.returncode == 0


def build(tree: Path, name: str, log) -> Path:
    """vms/build-kernel.sh on *tree* as it is now; the image is kept as PROOF_DIR/name.bzImage."""
    PROOF_DIR.mkdir(parents=True, exist_ok=True)
    out = PROOF_DIR / f"{name}.bzImage"
    log(f"building {name} (nice 15, incremental after the first build)")
    t0 = time.monotonic()
    logfile = PROOF_DIR / f"{name}.build.log"
    with open(logfile, "w") as f:
        p = subprocess.run([str(VMS_DIR / "build-kernel.sh"), str(tree)], stdout=f,
                           stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise RuntimeError(f"building {name} failed: see {logfile}")
    image = Path(logfile.read_text().strip().splitlines()[-1])
    shutil.copy2(image, out)
    log(f"built {name} in {time.monotonic() - t0:.0f} s")
    return out


def build_kernels(names: set[str], log) -> dict[str, Path]:
    """The source-built kernels among *names*: SRC and SRC-no-<bug> (one reverse patch each,
    applied for its build only)."""
    wanted = sorted(n for n in names if n == SRC or n.startswith(f"{SRC}-no-"))
    if not wanted:
        return {}
    tree = fetch_source(log)
    patches = {revert(p.stem): p for p in sorted(REVERTS.glob("*.patch"))}
    for patch in patches.values():  # a run that was interrupted may have left one applied
        if _patch(tree, patch, "-R", "--dry-run"):
            _patch(tree, patch, "-R")
    images: dict[str, Path] = {}
    for name in wanted:
        if name == SRC:
            images[name] = build(tree, name, log)
            continue
        patch = patches.get(name)
        if patch is None:
            raise RuntimeError(f"no reverse patch for {name} in {REVERTS}")
        if not _patch(tree, patch, "--dry-run"):
            raise RuntimeError(f"{patch.name} does not apply to {tree}")
        _patch(tree, patch)
        try:
            images[name] = build(tree, name, log)
        finally:
            _patch(tree, patch, "-R")
    return images


# --- running the bugs' tests -------------------------------------------------------------------
def kernel_spec(name: str, images: dict[str, Path]) -> KernelSpec:
    if name in images:
        return KernelSpec(name=name, source="local", vmlinuz=str(images[name]),
                          note="built from linux-source-6.1 with vms/uffdwp.config")
    return select(load_catalogue(), name)[0]


def run_bugs(name: str, spec: KernelSpec, bugs: list[str], numa: int, report: Path,
             console: Console) -> dict[str, tuple[str, str]]:
    """Boot one kernel, run only *bugs*' tests; bug -> (verdict, why: the first failing test's
    reason, so that a reader sees which check failed)."""
    from .guestcmd import RUN_COMMAND
    from .runner import run_matrix

    cmd = RUN_COMMAND + " --bugs " + ",".join(bugs)
    outcomes, _ = run_matrix([spec], report, cmd, accel="auto", timeout=1200, jobs=1,
                             console=console, numa_nodes=numa)
    if not outcomes or not outcomes[0].record.tests:
        status = outcomes[0].status if outcomes else "not run"
        return {b: (status, outcomes[0].detail if outcomes else "") for b in bugs}
    record = outcomes[0].record
    verdicts = bug_verdicts(record)
    out: dict[str, tuple[str, str]] = {}
    for b in bugs:
        v = verdicts.get(b, "no test")
        why = next((f"{t.test}[{t.memtype}]: {t.reason}" for t in record.tests
                    if (t.bug or {}).get("key") == b and t.verdict == v and v != "pass"), "")
        out[b] = (v, why)
    return out


def proven(without: str, with_fix: str) -> bool:
    return without in ("known-bug", "fail") and with_fix == "pass"


def table(rows: list[dict]) -> str:
    L = ["| bug | kernel without the fix | verdict | kernel with the fix | verdict | proven "
         "| reproduce |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['bug']} | {r['without']} | {r['without_verdict']} | {r['with']} "
                 f"| {r['with_verdict']} | {'yes' if r['proven'] else '**no**'} "
                 f"| `vms/prove-known-bugs.sh {r['bug']}` |")
    whys = [r for r in rows if r.get("without_why") or r.get("with_why")]
    if whys:
        L += ["", "What failed:", ""]
        for r in whys:
            for side in ("without", "with"):
                if r.get(f"{side}_why"):
                    L.append(f"- {r['bug']} on {r[side]}: {r[f'{side}_why']}")
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vms/prove-known-bugs.sh",
        description="Show each known bug's tests failing on a kernel without its fix and "
                    "passing on one with it (Debian builds, or linux-source-6.1 built with the "
                    "fix reverted).")
    parser.add_argument("bugs", nargs="*", help="known-bug keys (default: every bug with a proof)")
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "reports" / "prove")
    args = parser.parse_args(argv)
    console = Console()
    unknown = [b for b in args.bugs if b not in KNOWN_BUGS]
    if unknown:
        console.print(f"[red]prove: unknown known bug(s) {', '.join(unknown)}[/]")
        return 2
    proofs = [p for p in PROOFS if not args.bugs or p.bug in args.bugs]
    missing = [b for b in args.bugs if b not in {p.bug for p in proofs}]
    if missing:
        console.print(f"[red]prove: no proof recipe for {', '.join(missing)} (see vms/PROOF.md)[/]")
        return 2

    def log(msg: str) -> None:
        console.print(msg, highlight=False)

    t0 = time.monotonic()
    try:
        images = build_kernels({k for p in proofs for k in (p.without, p.with_fix)}, log)
    except (FetchError, RuntimeError, OSError, subprocess.CalledProcessError) as e:
        console.print(f"[red]prove: {e}[/]")
        return 1
    # one guest run per kernel (and NUMA layout), with the tests of every bug it serves
    runs: dict[tuple[str, int], list[str]] = {}
    for p in proofs:
        for k in (p.without, p.with_fix):
            runs.setdefault((k, p.numa_nodes), []).append(p.bug)
    verdicts: dict[tuple[str, int], dict[str, str]] = {}
    for (name, numa), bugs in runs.items():
        slot = f"{name}-numa{numa}" if numa > 1 else name
        verdicts[(name, numa)] = run_bugs(name, kernel_spec(name, images), bugs, numa,
                                          args.report / slot, console)
    rows = []
    for p in proofs:
        wo, wo_why = verdicts[(p.without, p.numa_nodes)][p.bug]
        wi, wi_why = verdicts[(p.with_fix, p.numa_nodes)][p.bug]
        rows.append({"bug": p.bug, "without": p.without, "without_verdict": wo,
                     "without_why": wo_why, "with": p.with_fix, "with_verdict": wi,
                     "with_why": wi_why, "proven": proven(wo, wi), "numa_nodes": p.numa_nodes,
                     "how": p.how})
    args.report.mkdir(parents=True, exist_ok=True)
    (args.report / "proof.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = table(rows)
    (args.report / "PROOF.md").write_text(text)
    console.print(text, highlight=False, markup=False)
    ok = sum(r["proven"] for r in rows)
    console.print(f"{ok} of {len(rows)} proven in {time.monotonic() - t0:.0f} s; "
                  f"report: {args.report}/PROOF.md")
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
