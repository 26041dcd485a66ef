/* SPDX-License-Identifier: GPL-2.0-only */
/* Page data helpers: CRC32C (SSE4.2 where the CPU has it) and the zero-page test.
 * Plain C declarations only: cffi reads this file as its cdef. */
#ifndef UFFDWP_PAGEDATA_NATIVE_H
#define UFFDWP_PAGEDATA_NATIVE_H

#include <stdint.h>

uint32_t uffdsnap_crc32c(uint32_t crc, const void *buf, uint64_t len);
int uffdsnap_is_zero(const void *buf, uint64_t len);

#endif
