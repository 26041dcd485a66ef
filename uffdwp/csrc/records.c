// SPDX-License-Identifier: GPL-2.0-only
/* Image records and output helpers. See records.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "pagedata_native.h"
#include "uffdwp_native.h"
#include "records.h"

void seal_record(struct rec_hdr *h, uint32_t *chain)
{
	h->magic = REC_MAGIC;
	h->header_crc = uffdsnap_crc32c(0, h, offsetof(struct rec_hdr, header_crc));
	/* The chain covers the 28 bytes before header_crc: a CRC over a message followed by its
	 * own CRC is a constant, so chaining whole self-checked headers would prove nothing. */
	if (chain)
		*chain = uffdsnap_crc32c(*chain, h, offsetof(struct rec_hdr, header_crc));
}

int write_full(int fd, const void *buf, uint64_t len, int stop_fd, int stall_ms)
{
	struct iovec iov = { .iov_base = (void *)(uintptr_t)buf, .iov_len = len };
	return writev_full(fd, &iov, 1, stop_fd, stall_ms);
}

int writev_full(int fd, struct iovec *iov, int n, int stop_fd, int stall_ms)
{
	uint64_t last_progress = uffdwp_now_ns();
	while (n > 0) {
		ssize_t done = writev(fd, iov, n);
		if (done > 0) {
			last_progress = uffdwp_now_ns();
			while (n > 0 && (size_t)done >= iov->iov_len) { /* skip what went out */
				done -= (ssize_t)iov->iov_len;
				iov++;
				n--;
			}
			if (n > 0) {
				iov->iov_base = (uint8_t *)iov->iov_base + done;
				iov->iov_len -= (size_t)done;
			}
			continue;
		}
		if (done == 0)
			return -EIO;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		struct pollfd pf[2] = { { .fd = fd, .events = POLLOUT },
					{ .fd = stop_fd, .events = POLLIN } };
		if (poll(pf, stop_fd >= 0 ? 2 : 1, 200) < 0 && errno != EINTR)
			return -errno;
		if (stop_fd >= 0 && pf[1].revents)
			return -ECANCELED;
		if (pf[0].revents & (POLLERR | POLLHUP) && !(pf[0].revents & POLLOUT))
			return -EPIPE;
		if (stall_ms > 0 && uffdwp_now_ns() - last_progress > (uint64_t)stall_ms * 1000000ull)
			return -ETIMEDOUT;
	}
	return 0;
}

void block_sigpipe(void *old_sigset)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, old_sigset);
}

void restore_sigmask(const void *old_sigset)
{
	pthread_sigmask(SIG_SETMASK, old_sigset, NULL);
}

void drop_pending_sigpipe(void)
{
	sigset_t set;
	struct timespec zero = { 0, 0 };
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	while (sigtimedwait(&set, NULL, &zero) == SIGPIPE)
		;
}
