/* SPDX-License-Identifier: GPL-2.0-only */
/* The reference `uffdwp bench roundtrip` holds the native fault handler against: a minimal
 * UFFD-WP round trip in plain C with its own userfaultfd, mapping and threads. No code of
 * uffdwp's own runs in it, so whatever uffdwp adds shows up as a ratio above 1.
 * Plain C declarations only: cffi reads this file as its cdef. */
#ifndef UFFDWP_WPREF_NATIVE_H
#define UFFDWP_WPREF_NATIVE_H

#include <stdint.h>

/* Map `pages` anonymous 4 KiB-or-larger pages, populate them, register them for WP and protect
 * them all; then a writer thread stores once into each page in order, timing each store
 * (CLOCK_MONOTONIC around the store), while a handler thread resolves each fault with poll +
 * read + UFFDIO_WRITEPROTECT (mode 0, which wakes the writer). stalls_ns gets one time per
 * page. Returns the number of samples, or -errno; after timeout_ms the range is unprotected
 * and woken, so the writer always ends (-ETIMEDOUT). Each thread starts on its CPU (< 0: any
 * CPU the caller may use), so that both sides of a comparison run in the same placement. */
int64_t uffdbench_reference_roundtrip(uint64_t pages, uint64_t *stalls_ns, int32_t timeout_ms,
				      int32_t writer_cpu, int32_t handler_cpu);

#endif
