/* Helpers shared by the C files of uffdwp, not part of the Python-visible API (cffi reads only
 * the *_native.h headers). */
#ifndef UFFDWP_INTERNAL_H
#define UFFDWP_INTERNAL_H

#include <stdint.h>
#include <time.h>

/* UFFDIO_WRITEPROTECT of [start, start+len) with *mode*, retried while the kernel answers EAGAIN
 * (the mm is changing under us) or EINTR; 0 or -errno. */
int uffdwp_writeprotect(int uffd, uint64_t start, uint64_t len, uint64_t mode);
/* UFFDIO_WAKE of [start, start+len); 0 or -errno. */
int uffdwp_wake(int uffd, uint64_t start, uint64_t len);
/* The CLOCK_REALTIME instant timeout_ms from now, for pthread_cond_timedwait. */
struct timespec uffdwp_deadline(int timeout_ms);

/* memcpy of n bytes that also returns the CRC32C of them, continuing crc (pagedata_native.c). */
uint32_t uffdwp_copy_crc(void *dst, const void *src, uint64_t n, uint32_t crc);

#endif
