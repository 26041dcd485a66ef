# SPDX-License-Identifier: GPL-2.0-only
"""What `uffdwp bench snapshot` runs by default: its methods, memory patterns, rates and writer
counts (plain constants, so the CLI can offer them without loading the bench)."""

METHODS = ("uffd-wp", "precopy", "precopy-mapped", "precopy-naive", "fork", "stop")
PATTERNS = ("random", "quarter-zero")
DEFAULT_RATES = (-1, 10_000, 100_000, 1_000_000, 0)  # stores/s per writer; -1 idle, 0 max
DEFAULT_WRITERS = (1, 2)  # the first runs every method; the others uffd-wp at the top rate

__all__ = ["DEFAULT_RATES", "DEFAULT_WRITERS", "METHODS", "PATTERNS"]
