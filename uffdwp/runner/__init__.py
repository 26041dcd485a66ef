# SPDX-License-Identifier: GPL-2.0-only
"""`uffdwp run`: run the conformance suites on this kernel and write its report directory.

  command     the `run` subcommand: options, the pytest subprocess, exit status
  plugin      pytest plugin: one JSON line per finished test (works under pytest-xdist)
  session     starts pytest, follows the plugin's event file, turns events into outcomes
  progress    the live display (rich bar on a TTY, one line per finished file otherwise)
  verdicts    outcome + known bug + kernel release -> pass|fail|skip|known-bug|error
  results     the results.json document (schema uffdwp-results/1)
  context     what the run ran on: distribution package, TCG/KVM, the suite's version and commit
  tables      shared views of the results (the fix behind a known bug, verdict grid, counts)
  skips       skips by cause: missing feature (with its release), capability, environment
  report_md, report_html, junit, ktap, kcidb   one writer per output format
"""
