"""Benchmarks of the snapshot engine and the binding (`uffdwp bench`, `uffdwp wrlat`)."""
