/* SPDX-License-Identifier: GPL-2.0-only */
/* Helpers shared by the C files of uffdwp, not part of the Python-visible API (cffi reads only
 * the *_native.h headers). */
#ifndef UFFDWP_INTERNAL_H
#define UFFDWP_INTERNAL_H

#include <setjmp.h>
#include <stdint.h>
#include <time.h>

/* UFFDIO_WRITEPROTECT of [start, start+len) with *mode*, retried on EINTR; 0 or -errno.
 * EAGAIN: an event is pending (the mm is changing): whoever reads the uffd must read it
 * before the call can succeed, so it comes back to the caller. */
int uffdwp_writeprotect(int uffd, uint64_t start, uint64_t len, uint64_t mode);
/* The same over the mapped parts of the range (below), for cleanup when nobody else reads the
 * uffd any more: on EAGAIN it reads and drops pending messages itself, for at most 10 s. */
int uffdwp_writeprotect_settle(int uffd, uint64_t start, uint64_t len, uint64_t mode);
/* The same over the mapped parts of [start, start+len) one VMA at a time, where the kernel
 * refuses the whole range (one spanning VMAs or holes, on 6.1 and older): wp does each piece.
 * 0, or the first error other than ENOENT. */
int uffdwp_writeprotect_mapped(int uffd, uint64_t start, uint64_t len, uint64_t mode,
			       int (*wp)(int, uint64_t, uint64_t, uint64_t));
/* 1 if an event (fork, remove, unmap, remap) is pending on uffd: its thread waits until the
 * event is read, and write-protect ioctls answer EAGAIN until then. */
int uffdwp_event_pending(int uffd);
/* UFFDIO_WAKE of [start, start+len); 0 or -errno. */
int uffdwp_wake(int uffd, uint64_t start, uint64_t len);
/* The CLOCK_REALTIME instant timeout_ms from now, for pthread_cond_timedwait. */
struct timespec uffdwp_deadline(int timeout_ms);

/* memcpy of n bytes that also returns the CRC32C of them, continuing crc (pagedata_native.c). */
uint32_t uffdwp_copy_crc(void *dst, const void *src, uint64_t n, uint32_t crc);

/* Guarded access (memguard_native.c): a thread takes a guard slot once, then around each access
 * to memory the caller may unmap:
 *
 *	if (sigsetjmp(g.jb, 0)) { ...the access faulted: -EFAULT... }
 *	memguard_arm(&g, lo, hi);  ...touch [lo, hi)...  memguard_disarm(&g);
 *
 * A SIGSEGV/SIGBUS at an address in [lo, hi) while armed returns from sigsetjmp with the signal
 * number (and disarms); any other fault crashes as before. Locals written after sigsetjmp and
 * read after the jump must be volatile. No lock may be held while armed. */
struct memguard {
	sigjmp_buf jb;
	int slot;
};
int memguard_take(struct memguard *g); /* 0, or -errno (no free slot, handler not installed) */
void memguard_arm(struct memguard *g, uintptr_t lo, uintptr_t hi);
void memguard_disarm(struct memguard *g);
void memguard_release(struct memguard *g);

#endif
