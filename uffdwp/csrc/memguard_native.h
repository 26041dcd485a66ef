/* SPDX-License-Identifier: GPL-2.0-only */
/* Access to memory the caller may unmap at any moment: a fault ends in -EFAULT, not in SIGSEGV
 * or SIGBUS. Plain C declarations only: cffi reads this file as its cdef.
 */
#ifndef UFFDWP_MEMGUARD_NATIVE_H
#define UFFDWP_MEMGUARD_NATIVE_H

#include <stdint.h>

/* memmove of n bytes from src to dst: 0, or -EFAULT if either side is not mapped (or not
 * writable, or its backing file shrank). */
int uffdwp_guarded_copy(uint64_t dst, uint64_t src, uint64_t n);

#endif
