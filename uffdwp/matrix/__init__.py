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

from pathlib import Path

# The repository root: uffdwp/matrix/__init__.py -> repo
REPO_ROOT = Path(__file__).resolve().parents[2]
VMS_DIR = REPO_ROOT / "vms"
CACHE_DIR = VMS_DIR / "cache"
