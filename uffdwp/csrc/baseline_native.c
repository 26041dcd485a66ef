// SPDX-License-Identifier: GPL-2.0-only
/* Writers for benchmark baselines and tests: the image format from memory that is not being
 * snapshotted (stopped writers, a fork child, rounds of dirty pages). See baseline_native.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pagedata_native.h"
#include "uffdwp_internal.h"
#include "records.h"
#include "baseline_native.h"

/* ----------------------------------------------------------------------------------------------
 * helpers for baselines and tests
 */
int64_t uffdsnap_write_all(int fd, uint64_t addr, uint64_t len, uint64_t chunk)
{
	sigset_t old;
	int64_t ret = (int64_t)len;
	block_sigpipe(&old);
	if (!chunk)
		chunk = 1 << 20;
	/* write(2) reads the memory in the kernel: an unmapped page is EFAULT, not a signal */
	for (uint64_t off = 0; off < len; off += chunk) {
		uint64_t n = len - off < chunk ? len - off : chunk;
		int w = write_full(fd, (const void *)(uintptr_t)(addr + off), n, -1, 0);
		if (w < 0) {
			drop_pending_sigpipe();
			ret = w;
			break;
		}
	}
	restore_sigmask(&old);
	return ret;
}

int64_t uffdsnap_write_pages(int fd, uint32_t region, uint64_t base, uint64_t page_size,
			     const uint64_t *indices, uint64_t n, uint32_t *chain,
			     uint64_t *records)
{
	const uint64_t cap = 4u << 20;
	if (!page_size || page_size > (1ull << 34))
		return -EINVAL;
	uint8_t *buf = malloc(cap + REC_HDR + page_size);
	if (!buf)
		return -ENOMEM;
	struct memguard g;
	int64_t ret = memguard_take(&g);
	if (ret < 0) {
		free(buf);
		return ret;
	}
	sigset_t old;
	block_sigpipe(&old);
	volatile uint64_t count = 0; /* read after a guarded fault */
	uint64_t used = 0, total = 0;
	struct rec_hdr *run = NULL;
	uint64_t run_end = 0;
	if (sigsetjmp(g.jb, 0)) { /* a page the caller named is not mapped */
		ret = -EFAULT;
		goto out;
	}
	for (uint64_t k = 0; k < n; k++) {
		uint64_t i = indices[k];
		const void *page = (const void *)(uintptr_t)(base + i * page_size);
		memguard_arm(&g, (uintptr_t)page, (uintptr_t)page + page_size);
		uint32_t type = uffdsnap_is_zero(page, page_size) ? REC_ZERO : REC_PAGES;
		if (used + REC_HDR + page_size > cap) { /* flush */
			if (run)
				seal_record(run, chain);
			run = NULL;
			int w = write_full(fd, buf, used, -1, 0);
			if (w < 0) {
				ret = w;
				goto out;
			}
			total += used;
			used = 0;
		}
		if (!run || run->type != type || run_end != i) {
			if (run)
				seal_record(run, chain);
			run = (struct rec_hdr *)(buf + used);
			memset(run, 0, REC_HDR);
			run->type = type;
			run->region = region;
			run->first = i;
			used += REC_HDR;
			count++;
		}
		if (type == REC_PAGES) {
			run->data_crc = uffdwp_copy_crc(buf + used, page, page_size, run->data_crc);
			used += page_size;
		}
		memguard_disarm(&g);
		run->count++;
		run_end = i + 1;
	}
	if (run)
		seal_record(run, chain);
	if (used) {
		int w = write_full(fd, buf, used, -1, 0);
		if (w < 0) {
			ret = w;
			goto out;
		}
		total += used;
	}
	ret = (int64_t)total;
out:
	memguard_release(&g);
	if (ret < 0)
		drop_pending_sigpipe();
	restore_sigmask(&old);
	if (records)
		*records += count;
	free(buf);
	return ret;
}

int64_t uffdsnap_write_end(int fd, uint64_t pages, uint64_t records, uint32_t chain)
{
	struct rec_hdr h = { .type = REC_END, .region = 0xffffffffu, .first = pages,
			     .count = (uint32_t)records, .data_crc = chain };
	seal_record(&h, NULL);
	int ret = write_full(fd, &h, REC_HDR, -1, 0);
	return ret < 0 ? (int64_t)ret : (int64_t)REC_HDR;
}

int64_t uffdsnap_soft_dirty(int pagemap_fd, uint64_t addr, uint64_t pages, uint64_t *out)
{
	const uint64_t batch = 65536;
	uint64_t *buf = malloc(batch * 8);
	if (!buf)
		return -ENOMEM;
	int64_t found = 0;
	for (uint64_t done = 0; done < pages;) {
		uint64_t n = pages - done < batch ? pages - done : batch;
		off_t off = (off_t)((addr / 4096 + done) * 8);
		ssize_t got = pread(pagemap_fd, buf, n * 8, off);
		if (got <= 0) {
			free(buf);
			return got < 0 ? -errno : -EIO;
		}
		uint64_t entries = (uint64_t)got / 8;
		for (uint64_t i = 0; i < entries; i++)
			if (buf[i] & (1ull << 55)) /* PM_SOFT_DIRTY */
				out[found++] = done + i;
		done += entries;
	}
	free(buf);
	return found;
}
