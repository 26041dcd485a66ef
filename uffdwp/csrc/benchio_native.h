/* SPDX-License-Identifier: GPL-2.0-only */
/* Output of the benchmark's bars and baselines, natively so that Python's per-call cost does
 * not weigh on what is compared. Plain C declarations only: cffi reads this file as its cdef. */
#ifndef UFFDWP_BENCHIO_NATIVE_H
#define UFFDWP_BENCHIO_NATIVE_H

#include <stdint.h>

/* The plain bar: writev(2) the byte runs (address, length pairs) to fd in order, at most chunk
 * bytes (and IOV_MAX runs) per call. Bytes written, or -errno. */
int64_t uffdbench_write_runs(int fd, const uint64_t *runs, uint64_t n_runs, uint64_t chunk);

/* Fixed-offset output (as QEMU's mapped-ram): page indices[k] of the memory at base goes to
 * file_offset + indices[k] * page_size with pwrite(2), consecutive pages in one call of at most
 * max_run bytes; a zero page is not written and its bit in bitmap cleared, any other page's
 * bit set. Indices must ascend. Bytes written, or -errno (-EFAULT: memory not mapped). */
int64_t uffdbench_pwrite_pages(int fd, uint64_t base, uint64_t page_size, const uint64_t *indices,
			       uint64_t n, uint64_t file_offset, uint8_t *bitmap, uint64_t max_run);

#endif
