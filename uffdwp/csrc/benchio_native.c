// SPDX-License-Identifier: GPL-2.0-only
/* Output of the benchmark's bars and baselines (benchio_native.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#include "pagedata_native.h"
#include "records.h"
#include "uffdwp_internal.h"
#include "benchio_native.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

int64_t uffdbench_write_runs(int fd, const uint64_t *runs, uint64_t n_runs, uint64_t chunk)
{
	struct iovec iov[IOV_MAX];
	int n = 0;
	uint64_t batch = 0;
	int64_t total = 0;
	sigset_t old;
	if (!chunk)
		chunk = 1 << 20;
	block_sigpipe(&old);
	for (uint64_t k = 0; k < n_runs; k++) {
		uint64_t addr = runs[2 * k], len = runs[2 * k + 1];
		while (len) {
			uint64_t take = len < chunk - batch ? len : chunk - batch;
			iov[n].iov_base = (void *)(uintptr_t)addr;
			iov[n].iov_len = take;
			n++;
			batch += take;
			addr += take;
			len -= take;
			if (batch == chunk || n == IOV_MAX) {
				int ret = writev_full(fd, iov, n, -1, 0);
				if (ret < 0) {
					total = ret;
					goto out;
				}
				total += (int64_t)batch;
				n = 0;
				batch = 0;
			}
		}
	}
	if (n) {
		int ret = writev_full(fd, iov, n, -1, 0);
		total = ret < 0 ? ret : total + (int64_t)batch;
	}
out:
	if (total < 0)
		drop_pending_sigpipe();
	restore_sigmask(&old);
	return total;
}

static int pwrite_full(int fd, const uint8_t *buf, uint64_t len, uint64_t offset)
{
	while (len) {
		ssize_t w = pwrite(fd, buf, len, (off_t)offset);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += w;
		len -= (uint64_t)w;
		offset += (uint64_t)w;
	}
	return 0;
}

int64_t uffdbench_pwrite_pages(int fd, uint64_t base, uint64_t page_size, const uint64_t *indices,
			       uint64_t n, uint64_t file_offset, uint8_t *bitmap, uint64_t max_run)
{
	struct memguard g;
	if (!page_size || !max_run)
		return -EINVAL;
	int64_t ret = memguard_take(&g);
	if (ret < 0)
		return ret;
	volatile int64_t total = 0; /* read after a guarded fault */
	uint64_t run_first = 0, run_pages = 0;
	if (sigsetjmp(g.jb, 0)) { /* a page the caller named is not mapped */
		total = -EFAULT;
		goto out;
	}
	for (uint64_t k = 0; k <= n; k++) {
		int data = 0;
		uint64_t i = k < n ? indices[k] : 0;
		if (k < n) {
			const void *page = (const void *)(uintptr_t)(base + i * page_size);
			memguard_arm(&g, (uintptr_t)page, (uintptr_t)page + page_size);
			data = !uffdsnap_is_zero(page, page_size);
			memguard_disarm(&g);
			if (data)
				bitmap[i / 8] |= (uint8_t)(1u << (i % 8));
			else
				bitmap[i / 8] &= (uint8_t)~(1u << (i % 8));
		}
		/* extend the run of data pages, or write it out */
		if (data && run_pages && i == run_first + run_pages &&
		    (run_pages + 1) * page_size <= max_run) {
			run_pages++;
			continue;
		}
		if (run_pages) {
			int w = pwrite_full(fd, (const uint8_t *)(uintptr_t)(base + run_first * page_size),
					    run_pages * page_size, file_offset + run_first * page_size);
			if (w < 0) {
				total = w;
				goto out;
			}
			total += (int64_t)(run_pages * page_size);
		}
		run_first = i;
		run_pages = data ? 1 : 0;
	}
out:
	memguard_release(&g);
	return total;
}
