/* SPDX-License-Identifier: GPL-2.0-only */
/* Writers for benchmark baselines and tests (the snapshot engine writes its images itself).
 * Plain C declarations only: cffi reads this file as its cdef. */
#ifndef UFFDWP_BASELINE_NATIVE_H
#define UFFDWP_BASELINE_NATIVE_H

#include <stdint.h>

/* write(2) all of [addr, addr+len) to fd in chunk-sized calls: bytes written or -errno. */
int64_t uffdsnap_write_all(int fd, uint64_t addr, uint64_t len, uint64_t chunk);
/* Write image records for the listed pages of one region (runs of consecutive indices become one
 * record, zero pages carry no bytes); *chain is the running CRC of record headers.
 * Returns bytes written or -errno; *records counts records written. */
int64_t uffdsnap_write_pages(int fd, uint32_t region, uint64_t base, uint64_t page_size,
			     const uint64_t *indices, uint64_t n, uint32_t *chain,
			     uint64_t *records);
/* The end record for a stream of records (so baselines produce a loadable image). */
int64_t uffdsnap_write_end(int fd, uint64_t pages, uint64_t records, uint32_t chain);
/* Soft-dirty pages of [addr, addr + pages*4096) from /proc/self/pagemap (fd): their indices go
 * to out (capacity pages); returns how many, or -errno. */
int64_t uffdsnap_soft_dirty(int pagemap_fd, uint64_t addr, uint64_t pages, uint64_t *out);

#endif
