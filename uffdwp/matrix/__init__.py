# SPDX-License-Identifier: GPL-2.0-only
"""Run the uffdwp suites on a matrix of real guest kernels (QEMU direct boot or Vagrant).

Modules, one job each:
  catalogue  which kernels exist and where they come from (vms/kernels.cfg)
  debfetch   fetch, verify and unpack Debian kernel packages into vms/cache/
  initramfs  build a guest initramfs from a kernel's own modules and busybox
  accel      decide between KVM and TCG (by actually booting)
  qemu       boot one kernel under QEMU and run the guest command in it
  hostrun    run the guest command on this machine's own kernel, without a VM
  results    read one kernel's result directory (results.json, or the fallback files)
  report     the matrix report's views (summary.json, report.md, report.html, junit.xml) and its
             extension point for per-kernel rows and sections
  doc        the report's content as plain data, rendered to Markdown and HTML
  runner     run the selected kernels side by side with progress
  vagrant    the same through Vagrant (python-vagrant)
  command    the `uffdwp matrix` subcommand
"""

from __future__ import annotations

# The checkout (or, installed, the package directory that stands for it) and what the matrix
# reads and writes there: uffdwp/tree.py
from ..tree import CACHE_DIR, VMS_DIR, WORK_DIR
from ..tree import ROOT as REPO_ROOT

__all__ = ["CACHE_DIR", "REPO_ROOT", "VMS_DIR", "WORK_DIR"]
