# SPDX-License-Identifier: GPL-2.0-only
# The repository root: lets `suites` and `tests` import each other's helpers as packages.
