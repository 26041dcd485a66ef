/* SPDX-License-Identifier: GPL-2.0-only */
/* The image's record format and output helpers, shared by the snapshot engine and the baseline
 * writers (uffdwp/snapshot/image.py mirrors the format). Internal: cffi does not read it. */
#ifndef UFFDWP_RECORDS_H
#define UFFDWP_RECORDS_H

#include <stdint.h>

/* Image record header: 32 bytes, little-endian (uffdwp/snapshot/image.py mirrors it). */
#define REC_MAGIC 0x43455253u /* "SREC" */
#define REC_PAGES 1u
#define REC_ZERO 2u
#define REC_END 3u
#define REC_HDR 32u

struct rec_hdr {
	uint32_t magic;
	uint32_t type;
	uint32_t region;
	uint32_t count;
	uint64_t first;
	uint32_t data_crc;
	uint32_t header_crc; /* crc32c of the 28 bytes before it */
};
_Static_assert(sizeof(struct rec_hdr) == REC_HDR, "record header is 32 bytes");

/* Fill in magic and header_crc; with chain, extend the running CRC of record headers. */
void seal_record(struct rec_hdr *h, uint32_t *chain);
/* write(2) everything, riding out EINTR and short writes; on a non-blocking fd wait in poll()
 * for room or for stop_fd (-ECANCELED: an abort interrupts a stuck reader), at most stall_ms
 * without progress when stall_ms > 0 (-ETIMEDOUT). 0 or -errno. */
int write_full(int fd, const void *buf, uint64_t len, int stop_fd, int stall_ms);
/* The same for an iovec array (changed as it goes): n entries, at most IOV_MAX. */
struct iovec;
int writev_full(int fd, struct iovec *iov, int n, int stop_fd, int stall_ms);
/* A SIGPIPE raised by our own write must not kill the process: block it in this thread (the
 * previous mask goes to *old when given), and consume the one a failed write left pending. */
void block_sigpipe(void *old_sigset);
void restore_sigmask(const void *old_sigset);
void drop_pending_sigpipe(void);

#endif
