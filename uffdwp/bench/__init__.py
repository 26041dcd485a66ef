# SPDX-License-Identifier: GPL-2.0-only
"""Benchmarks of the snapshot engine and the binding (`uffdwp bench`, `uffdwp wrlat`)."""
