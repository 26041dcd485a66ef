# SPDX-License-Identifier: GPL-2.0-only
"""Fixed UFFD-WP kernel bugs that user space can reproduce: the one table of them.

Each bug's mainline fix commit, release, stable backports and the names its fix goes by are
stated here once; the regression suites declare a bug by its key (``bug="close-reset"``), and
reports, verdicts and the matrix read the rest from this table.
"""

from __future__ import annotations

from dataclasses import dataclass


# Sources of the fix entries:
#   LORE     the patch on lore.kernel.org (message id) / mainline merge shortlog
#   STABLE   the stable review posting "[PATCH x.y n/m] <title>" on stable@vger.kernel.org, whose
#            series names the release ("stable review cycle for the x.y.z release")
#   FAILED   gregkh's "FAILED: patch ... failed to apply to x.y-stable tree"
#   OSV      the bug's CVE record on osv.dev (affected ranges per series)
#   DEBCL-v  Debian's linux package changelog (/usr/share/doc/linux-image-*/changelog.gz), which
#            lists every upstream stable release it imports with its shortlog
#            ("ChangeLog-6.1.191"): 5.10.223-1 (bullseye), 6.1.192-3 (bookworm-security),
#            6.12.117-1 (trixie). A fix absent from a series' newest changelog was never in it.
@dataclass(frozen=True)
class StableFix:
    """A known bug's fix in one stable series."""

    series: str  # "6.1"
    release: str | None  # first release of the series with the fix; None: never fixed there
    source: str


@dataclass(frozen=True)
class KnownBug:
    key: str
    title: str
    commit: str  # the mainline fix (12 hex digits)
    fixed_in: str  # the first mainline release with the fix
    source: str
    stable: tuple[StableFix, ...] = ()
    # how the fix is named where a distribution lists the commits it took: the upstream commit
    # subject (as in the stable queues and Debian's package changelogs), and its CVE where one
    # was assigned (sources: the stable list's patch mails; Debian's linux changelog 6.1.192-1)
    fix_names: tuple[str, ...] = ()

    @property
    def backports(self) -> tuple[str, ...]:
        """The stable releases that carry the fix, newest series first."""
        return tuple(f.release for f in self.stable if f.release)

    def stable_fix(self, series: str) -> StableFix | None:
        return next((f for f in self.stable if f.series == series), None)

    def describe(self) -> str:
        ports = f" (backported to {', '.join(self.backports)})" if self.backports else ""
        return f"known bug {self.commit}, fixed in {self.fixed_in}{ports}: {self.title}"


KNOWN_BUGS: dict[str, KnownBug] = {b.key: b for b in (
    KnownBug("wp-race-corruption", "memory corruption due to writeprotect", "6ce64428d620",
             "5.12", "LORE (Nadav Amit, 2021-03-12; merged for 5.12-rc3)",
             (StableFix("5.10", "5.10.24", "DEBCL-5.10.223: ChangeLog-5.10.24"),),
             fix_names=("mm/userfaultfd: fix memory corruption due to writeprotect",)),
    KnownBug("swp-uffd-wp-bit", "pte_same_as_swp() not removing the uffd-wp bit", "099dd6878b9b",
             "5.13", "LORE (Peter Xu); STABLE posting 'commit 099dd6878b9b upstream'",
             (StableFix("5.10", "5.10.46", "DEBCL-5.10.223: ChangeLog-5.10.46"),),
             fix_names=("mm/swap: fix pte_same_as_swp() not removing uffd-wp bit when compare",)),
    KnownBug("unuse-pte-bits", "swapoff (unuse_pte) drops the uffd-wp bit of swapped-out ptes",
             "14a762dd1977", "5.19",
             "LORE 20220519125030.21486-3-linmiaohe@huawei.com (mm/swapfile: fix lost swap bits "
             "in unuse_pte()); torvalds/linux master push 2022-05-27 (mm-stable-2022-05-27)",
             (StableFix("5.10", None, "DEBCL-5.10.223: absent"),),
             fix_names=("mm/swapfile: fix lost swap bits in unuse_pte()",)),
    KnownBug("fork-special-cases", "uffd-wp special cases for fork()", "8f34f1eac382", "5.14",
             "LORE (Peter Xu, 2021-06)",
             (StableFix("5.10", "5.10.53", "DEBCL-5.10.223: ChangeLog-5.10.53"),),
             fix_names=("mm/userfaultfd: fix uffd-wp special cases for fork()",)),
    KnownBug("unregister-reset", "reset write protection when unregistering with wp-mode",
             "f369b07c8614", "6.0", "LORE (Peter Xu, 2022-08-11; mm-hotfixes for 6.0)",
             (StableFix("5.10", None, "DEBCL-5.10.223: absent"),),
             fix_names=("mm/uffd: reset write protection when unregister with wp-mode",)),
    KnownBug("shmem-writenotify", "enable writenotify while uffd-wp is enabled for a VMA",
             "51d3d5eb74ff", "6.2", "LORE (David Hildenbrand, 2022-12)",
             (StableFix("6.1", "6.1.8", "DEBCL-6.1.192: ChangeLog-6.1.8"),),
             fix_names=("mm/userfaultfd: enable writenotify while userfaultfd-wp is enabled "
                        "for a VMA",)),
    KnownBug("fork-pte-marker", "pte marker when fork() without fork event", "49d6d7fb6313",
             "6.2", "LORE (Peter Xu, 2023-02)",
             (StableFix("6.1", "6.1.11", "DEBCL-6.1.192: ChangeLog-6.1.11"),),
             fix_names=("mm/uffd: fix pte marker when fork() without fork event",)),
    KnownBug("hugetlb-cow-wp", "hugetlb wr-protection for the CoW optimization path",
             "60d5b473d61b", "6.3",
             "LORE 20230321191840.1897940-1-peterx@redhat.com; Linux 6.3-rc6 shortlog",
             (StableFix("6.2", "6.2.11", "STABLE [PATCH 6.2 153/173], 6.2.11 review"),
              StableFix("6.1", "6.1.24", "DEBCL-6.1.192: ChangeLog-6.1.24")),
             fix_names=("mm/hugetlb: fix uffd wr-protection for CoW optimization path",)),
    KnownBug("thp-migration", "uffd-wp for THP migration entries", "24bf08c4376b", "6.3",
             "LORE (David Stevens, 2023-04)",
             (StableFix("6.1", "6.1.26", "DEBCL-6.1.192: ChangeLog-6.1.26"),),
             fix_names=("mm/userfaultfd: fix uffd-wp handling for THP migration entries",)),
    KnownBug("hugetlb-fork", "hugetlb uffd-wp during fork", "5a2f8d22ace4", "6.4",
             "LORE 20230417195317.898696-2-peterx@redhat.com",
             (StableFix("6.2", None, "FAILED to apply to 6.2-stable"),
              StableFix("6.1", None, "FAILED to apply to 6.1-stable; DEBCL-6.1.192: absent")),
             fix_names=("mm/hugetlb: fix uffd-wp during fork()",)),
    KnownBug("hugetlb-unshare", "uffd-wp bit lost on hugetlb unshare", "0f230bc24b6e", "6.4",
             "LORE 20230417195317.898696-3-peterx@redhat.com",
             (StableFix("6.1", None, "DEBCL-6.1.192: absent"),),
             fix_names=("mm/hugetlb: fix uffd-wp bit lost when unsharing happens",)),
    KnownBug("close-reset", "reset ptes on close() for wr-protected ones (CVE-2024-36881)",
             "c88033efe9a3", "6.9", "LORE 20240422133311.2987675-1-peterx@redhat.com",
             (StableFix("6.8", "6.8.10", "OSV CVE-2024-36881; STABLE [PATCH 6.8 315/336]"),
              StableFix("6.6", "6.6.31", "OSV CVE-2024-36881; STABLE [PATCH 6.6 283/301]"),
              StableFix("6.1", "6.1.191", "DEBCL-6.1.192: ChangeLog-6.1.191 (after FAILED "
                                          "to apply to 6.1-stable in 2024-05)")),
             fix_names=("mm/userfaultfd: reset ptes when close() for wr-protected ones",
                        "CVE-2024-36881")),
    # 6.6.y: no backport found (OSV lists only 6.12.11; no 6.6 stable posting in the index), so
    # a 6.6 kernel failing it reads known-bug, not regression.
    KnownBug("mremap-clear", "clear uffd-wp PTE/PMD state on mremap() (CVE-2025-21696)",
             "0cef0bb836e3", "6.13", "LORE 20250107144755.1871363-2-ryan.roberts@arm.com",
             (StableFix("6.12", "6.12.11", "STABLE [PATCH 6.12 100/122]; OSV CVE-2025-21696; "
                                           "DEBCL-6.12.117: ChangeLog-6.12.11"),
              StableFix("6.1", "6.1.191", "DEBCL-6.1.192: ChangeLog-6.1.191")),
             fix_names=("mm: clear uffd-wp PTE/PMD state on mremap()", "CVE-2025-21696")),
    KnownBug("mthp-zeropage", "zero-filled mTHP subpage remapped to the shared zero page loses "
             "uffd-wp (and soft-dirty)", "9658d698a8a8", "6.18",
             "LORE 20250930043351.34927-1-lance.yang@linux.dev (mm/rmap: fix soft-dirty and "
             "uffd-wp bit loss when remapping zero-filled mTHP subpage to shared zeropage)",
             (StableFix("6.17", "6.17.4", "STABLE [PATCH 6.17 316/371], 6.17.4 review"),
              StableFix("6.12", "6.12.54", "DEBCL-6.12.117: ChangeLog-6.12.54")),
             fix_names=("mm/rmap: fix soft-dirty and uffd-wp bit loss when remapping zero-filled "
                        "mTHP subpage to shared zeropage",)),
)}

# How each fix is named where a distribution lists the commits it took (KnownBug.fix_names).
FIX_NAMES: dict[str, tuple[str, ...]] = {k: b.fix_names for k, b in KNOWN_BUGS.items()}
