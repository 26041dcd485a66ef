# SPDX-License-Identifier: GPL-2.0-only
"""QEMU's own background snapshot, driven and checked: the program UFFD-WP was built for.

Modules, one job each:
  writer.S   the guest: a boot sector writing every page of its RAM, pass after pass
  bootblock  assemble writer.S (binutils) and read the status page it keeps
  cut        is a RAM image a consistent cut of the writer's sequence?
  vm         one QEMU (TCG) over QMP: start, read guest memory, migrate, load an image
  scenario   snapshot under the writer, control dumps, precopy baseline, restore and check
The suite is suites/test_qemu_snapshot.py; the matrix report's section matrix/qemu_report.py.
"""
