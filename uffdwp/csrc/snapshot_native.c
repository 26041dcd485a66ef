// SPDX-License-Identifier: GPL-2.0-only
/* Background snapshot engine. See snapshot_native.h and uffdwp/snapshot/image.py (the format).
 *
 * Threads: the engine thread owns the userfaultfd and is the only producer of records; the
 * output thread computes CRCs and writes committed slots. A writer that faults on a protected
 * page waits for exactly: the engine reading its message, one page copy, one unprotect ioctl.
 * The CRC and the write(2) to the target happen later, off that path.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "uffd_compat.h"
#include "uffdwp_native.h"
#include "uffdwp_internal.h"
#include "pagedata_native.h"
#include "records.h"
#include "snapshot_native.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* 5.14 */
#endif
#define PM_UFFD_WP (1ull << 57) /* /proc/PID/pagemap: the page is write-protected (5.13) */

/* ----------------------------------------------------------------------------------------------
 * engine
 *
 * Each page goes from UNSAVED to QUEUED (the linear pass checksummed it and a slot refers to
 * it: still protected, so it cannot change before the output thread writes it from memory)
 * or straight to SAFE (a copy is in a slot: a faulted page). A queued page is SAFE once its
 * slot is written; then its chunk is unprotected. So the linear pass copies each byte once,
 * in the kernel, from the frozen memory to the target.
 */
enum { UNSAVED = 0, QUEUED = 1, SAFE = 2 };

struct snap_region {
	uint64_t addr, len, ps, pages, next, chunk_pages, batch_pages;
	uint8_t *state;  /* per page: UNSAVED, QUEUED, SAFE (engine thread only) */
	uint64_t *queued_in; /* per chunk: the slot sequence that refers to it (engine only) */
};

/* One run of bytes the output thread writes: in the slot's buffer, or region memory. */
struct piece {
	const uint8_t *ptr;
	uint64_t len;
};

struct slot {
	uint8_t *buf;      /* record headers and copied pages */
	uint64_t used;     /* of buf */
	struct piece *pieces;
	uint32_t n_pieces, cap_pieces;
	int32_t ref_region; /* -1, or the region whose pages [ref_first, +ref_count) it refers to */
	uint64_t ref_first, ref_count;
};

struct uffdsnap {
	pthread_t engine, output;
	int engine_started, output_started;
	int uffd, uffd_flags, out_fd, out_nonblock, populate, protect, priority, fork_fails;
	int stall_ms, busy_poll_us;
	_Atomic int32_t priority_applied;
	int pagemap_fd;  /* /proc/self/pagemap, or -1: no page can be seen protected */
	uint64_t *pm;    /* pagemap entries of one chunk (engine thread only) */
	int engine_evfd; /* output -> engine: a slot was written, or abort */
	int output_evfd; /* abort -> output thread stuck in poll() */
	uint32_t n_regions;
	struct snap_region *r;
	uint64_t pages_total;
	uint32_t cur_region;
	struct memguard guard; /* the engine thread's: the caller may unmap a region under it */
	int draining;          /* an event is pending: make everything SAFE before reading it */
	uint64_t unsaved;      /* pages not SAFE yet (engine thread only) */
	uint64_t released;     /* slots whose referred pages were made SAFE (engine only) */
	uint32_t chain;        /* running CRC of record headers, in file order (engine only) */
	struct rec_hdr *run;   /* the open record of cur: sealed when the next one starts */

	/* ring: slot sequence numbers; slot k lives at slots[k % n_slots] */
	struct slot *slots;
	uint32_t n_slots, reserve;
	uint64_t slot_bytes;
	pthread_mutex_t lock;
	pthread_cond_t ready;   /* engine -> output: a slot was committed, or the end */
	pthread_cond_t done_cv; /* -> uffdsnap_wait */
	uint64_t committed, written; /* under lock */
	int writing;                 /* under lock: the output thread writes slot `written` */
	int producer_done;           /* under lock */
	int finished;                /* under lock: engine thread has set its final state */
	struct slot *cur;            /* engine's open slot (sequence == committed) or NULL */

	_Atomic int abort_req;
	_Atomic int32_t state, error, error_phase;
	_Atomic uint32_t chain_crc;
	_Atomic uint64_t pages_saved, linear_pages, fault_pages, zero_pages, data_pages, faults,
		faults_already, records, bytes_committed, bytes_written, t_start, t_protect, t_frozen,
		t_saved, t_end, populate_ns, protect_ns, service_max, service_total, ring_waits,
		events, drains, discarded_bytes, error_addr, faults_waited, patched, batched,
		engine_cpu_ns, output_cpu_ns, copied_unprotected;
	_Atomic uint64_t service_hist[64];
};

static void set_error(struct uffdsnap *s, int err, int phase)
{
	int32_t zero = 0;
	/* the first error wins: it is the cause, later ones are consequences */
	if (atomic_compare_exchange_strong(&s->error, &zero, err))
		atomic_store(&s->error_phase, phase);
	atomic_store(&s->abort_req, 1);
}

static void set_error_at(struct uffdsnap *s, int err, int phase, uint64_t addr)
{
	if (!atomic_load(&s->error))
		atomic_store(&s->error_addr, addr);
	set_error(s, err, phase);
}

/* An event is pending: from now on the engine makes every page safe before it reads it. */
static void start_draining(struct uffdsnap *s)
{
	if (!s->draining) {
		s->draining = 1;
		atomic_fetch_add(&s->drains, 1);
	}
}

static void kick(int evfd)
{
	uint64_t one = 1;
	ssize_t ret = write(evfd, &one, sizeof(one));
	(void)ret;
}

static void drain_evfd(int evfd)
{
	uint64_t v;
	ssize_t ret = read(evfd, &v, sizeof(v));
	(void)ret;
}

/* --- slots ----------------------------------------------------------------------------------- */
static void add_piece(struct slot *sl, const uint8_t *ptr, uint64_t len)
{
	struct piece *last = sl->n_pieces ? &sl->pieces[sl->n_pieces - 1] : NULL;
	if (last && last->ptr + last->len == ptr) { /* contiguous: one iovec */
		last->len += len;
		return;
	}
	sl->pieces[sl->n_pieces++] = (struct piece){ ptr, len };
}

/* Seal the open record: header CRC and the chain over record headers in file order. */
static void close_run(struct uffdsnap *s)
{
	if (s->run)
		seal_record(s->run, &s->chain);
	s->run = NULL;
}

static void commit_slot(struct uffdsnap *s)
{
	if (!s->cur)
		return;
	close_run(s);
	uint64_t bytes = 0;
	for (uint32_t i = 0; i < s->cur->n_pieces; i++)
		bytes += s->cur->pieces[i].len;
	atomic_fetch_add(&s->bytes_committed, bytes);
	pthread_mutex_lock(&s->lock);
	s->committed++;
	pthread_cond_signal(&s->ready);
	pthread_mutex_unlock(&s->lock);
	s->cur = NULL;
}

/* Open a slot with room for `need` buffer bytes and `pieces` pieces, committing the open one
 * if it has no room. The linear pass leaves `reserve` slots free so that a faulting writer
 * finds room at once. NULL: no room now (the output is behind). */
static struct slot *room(struct uffdsnap *s, uint64_t need, uint32_t pieces, int for_fault)
{
	if (s->cur && s->cur->used + need <= s->slot_bytes &&
	    s->cur->n_pieces + pieces <= s->cur->cap_pieces)
		return s->cur;
	commit_slot(s);
	pthread_mutex_lock(&s->lock);
	uint64_t free_slots = s->n_slots - (s->committed - s->released);
	uint64_t seq = s->committed;
	pthread_mutex_unlock(&s->lock);
	if (free_slots == 0 || (!for_fault && free_slots <= s->reserve))
		return NULL;
	s->cur = &s->slots[seq % s->n_slots];
	s->cur->used = 0;
	s->cur->n_pieces = 0;
	s->cur->ref_region = -1;
	return s->cur;
}

/* A record header at the end of the open slot's buffer (the previous one is sealed). */
static struct rec_hdr *new_record(struct uffdsnap *s, uint32_t type, uint32_t region,
				  uint64_t first)
{
	close_run(s);
	struct slot *sl = s->cur;
	struct rec_hdr *h = (struct rec_hdr *)(sl->buf + sl->used);
	memset(h, 0, sizeof(*h));
	h->type = type;
	h->region = region;
	h->first = first;
	sl->used += REC_HDR;
	add_piece(sl, (const uint8_t *)h, REC_HDR);
	atomic_fetch_add_explicit(&s->records, 1, memory_order_relaxed);
	s->run = h;
	return h;
}

/* Sleep until the output wrote a slot (or, with also_uffd, a message came). In busy-poll
 * mode the engine first spins that long: a faulting writer then does not wait for this
 * thread to be woken and scheduled, at the price of a core. */
static void wait_for_output(struct uffdsnap *s, int also_uffd)
{
	atomic_fetch_add(&s->ring_waits, 1);
	struct pollfd pf[2] = { { .fd = s->engine_evfd, .events = POLLIN },
				{ .fd = s->uffd, .events = POLLIN } };
	int n = also_uffd ? 2 : 1;
	if (s->busy_poll_us > 0) {
		uint64_t until = uffdwp_now_ns() + (uint64_t)s->busy_poll_us * 1000;
		while (uffdwp_now_ns() < until && !atomic_load(&s->abort_req)) {
			if (poll(pf, n, 0) > 0) {
				if (pf[0].revents)
					drain_evfd(s->engine_evfd);
				return;
			}
			__builtin_ia32_pause();
		}
	}
	if (poll(pf, n, 100) > 0 && pf[0].revents)
		drain_evfd(s->engine_evfd);
}

static struct snap_region *region_of(struct uffdsnap *s, uint64_t addr, uint32_t *ri)
{
	for (uint32_t i = 0; i < s->n_regions; i++)
		if (addr >= s->r[i].addr && addr < s->r[i].addr + s->r[i].len) {
			*ri = i;
			return &s->r[i];
		}
	return NULL;
}

/* Region memory is read under the engine's guard: if the caller unmaps a page before it is
 * saved, its content at the freeze is gone and the snapshot fails, instead of the process. */
static const uint8_t *page_at(struct uffdsnap *s, uint32_t ri, uint64_t idx)
{
	return (const uint8_t *)(uintptr_t)(s->r[ri].addr + idx * s->r[ri].ps);
}

/* s->pm[k] = the pagemap entry of page first + k, k < n; 0 where it cannot be read. A page is
 * written from memory only while this shows it protected: only then can it not change between
 * its CRC and the write. Huge pages read the entry of their first 4 KiB. */
static void read_protection(struct uffdsnap *s, struct snap_region *r, uint64_t first, uint64_t n)
{
	uint64_t addr = r->addr + first * r->ps;
	if (s->pagemap_fd >= 0 && r->ps == 4096 &&
	    pread(s->pagemap_fd, s->pm, n * 8, (off_t)(addr / 4096 * 8)) == (ssize_t)(n * 8))
		return;
	for (uint64_t k = 0; k < n; k++, addr += r->ps)
		if (s->pagemap_fd < 0 ||
		    pread(s->pagemap_fd, &s->pm[k], 8, (off_t)(addr / 4096 * 8)) != 8)
			s->pm[k] = 0;
}

/* After a slot that refers to region memory was written: each page still queued must still be
 * protected, else it could have changed while it was written and the image would not hold
 * the memory at the freeze. 0, or -1 (the snapshot fails). */
static int check_still_protected(struct uffdsnap *s, struct snap_region *r, uint64_t first,
				 uint64_t n)
{
	uint64_t k = 0;
	while (k < n && r->state[first + k] != QUEUED)
		k++;
	if (k == n) /* all copied or zero: nothing was written from memory */
		return 0;
	read_protection(s, r, first, n);
	for (; k < n; k++)
		if (r->state[first + k] == QUEUED && !(s->pm[k] & PM_UFFD_WP)) {
			set_error_at(s, -EIO, UFFDSNAP_PHASE_PROTECTION, r->addr + (first + k) * r->ps);
			return -1;
		}
	return 0;
}

/* 1 if the page is all zero, 0 if not, -EFAULT if it is not mapped (the snapshot fails). */
static int page_is_zero(struct uffdsnap *s, uint32_t ri, uint64_t idx)
{
	const uint8_t *page = page_at(s, ri, idx);
	if (sigsetjmp(s->guard.jb, 0)) {
		set_error_at(s, -EFAULT, UFFDSNAP_PHASE_MEMORY, (uint64_t)(uintptr_t)page);
		return -EFAULT;
	}
	memguard_arm(&s->guard, (uintptr_t)page, (uintptr_t)page + s->r[ri].ps);
	int zero = uffdsnap_is_zero(page, s->r[ri].ps);
	memguard_disarm(&s->guard);
	return zero;
}

/* Extend *crc by the page's CRC32C, read in place; 0 or -EFAULT (the snapshot fails). */
static int page_crc(struct uffdsnap *s, uint32_t ri, uint64_t idx, uint32_t *crc)
{
	const uint8_t *page = page_at(s, ri, idx);
	if (sigsetjmp(s->guard.jb, 0)) {
		set_error_at(s, -EFAULT, UFFDSNAP_PHASE_MEMORY, (uint64_t)(uintptr_t)page);
		return -EFAULT;
	}
	memguard_arm(&s->guard, (uintptr_t)page, (uintptr_t)page + s->r[ri].ps);
	*crc = uffdsnap_crc32c(*crc, page, s->r[ri].ps);
	memguard_disarm(&s->guard);
	return 0;
}

/* Copy the page to dst, extending *crc (NULL: no CRC); 0 or -EFAULT (the snapshot fails). */
static int copy_page(struct uffdsnap *s, uint32_t ri, uint64_t idx, uint8_t *dst, uint32_t *crc)
{
	const uint8_t *page = page_at(s, ri, idx);
	if (sigsetjmp(s->guard.jb, 0)) {
		set_error_at(s, -EFAULT, UFFDSNAP_PHASE_MEMORY, (uint64_t)(uintptr_t)page);
		return -EFAULT;
	}
	memguard_arm(&s->guard, (uintptr_t)page, (uintptr_t)page + s->r[ri].ps);
	if (crc)
		*crc = uffdwp_copy_crc(dst, page, s->r[ri].ps, *crc);
	else
		memcpy(dst, page, s->r[ri].ps);
	memguard_disarm(&s->guard);
	return 0;
}

static int unprotect(struct uffdsnap *s, uint64_t start, uint64_t len)
{
	int ret = uffdwp_writeprotect(s->uffd, start, len, 0);
	if (ret == -ENOENT || ret == -EINVAL) /* split or punched by the caller: piece by piece */
		ret = uffdwp_writeprotect_mapped(s->uffd, start, len, 0, uffdwp_writeprotect);
	if (ret == -EAGAIN) {
		/* An event is pending: protection stays until everything is safe (drain). */
		start_draining(s);
		return 0;
	}
	return ret;
}

static void make_safe(struct uffdsnap *s, struct snap_region *r, uint64_t idx)
{
	if (r->state[idx] != SAFE) {
		r->state[idx] = SAFE;
		s->unsaved--;
	}
}

/* Slots the output has written: their queued pages are safe, so unprotect their chunks
 * (waking whoever faulted on them meanwhile). While an event holds the mm, the unprotect
 * waits for the release at the end. */
static void release_written(struct uffdsnap *s)
{
	pthread_mutex_lock(&s->lock);
	uint64_t written = s->written;
	pthread_mutex_unlock(&s->lock);
	for (; s->released < written; s->released++) {
		struct slot *sl = &s->slots[s->released % s->n_slots];
		if (sl->ref_region < 0)
			continue;
		struct snap_region *r = &s->r[sl->ref_region];
		if (check_still_protected(s, r, sl->ref_first, sl->ref_count) < 0)
			return;
		for (uint64_t i = sl->ref_first; i < sl->ref_first + sl->ref_count; i++)
			make_safe(s, r, i);
		if (!s->draining) {
			uint64_t start = r->addr + sl->ref_first * r->ps;
			int ret = unprotect(s, start, sl->ref_count * r->ps);
			if (ret < 0)
				set_error_at(s, ret, UFFDSNAP_PHASE_UNPROTECT, start);
		}
	}
	if (!s->unsaved && !atomic_load(&s->t_saved))
		atomic_store(&s->t_saved, uffdwp_now_ns());
}

/* --- faults ---------------------------------------------------------------------------------- */
/* message read -> the page safe (the unprotect follows): the fault's service time */
static void account_service(struct uffdsnap *s, uint64_t t_read)
{
	uint64_t t = uffdwp_now_ns() - t_read;
	atomic_fetch_add_explicit(&s->service_total, t, memory_order_relaxed);
	if (t > atomic_load_explicit(&s->service_max, memory_order_relaxed))
		atomic_store_explicit(&s->service_max, t, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->service_hist[t ? 63 - __builtin_clzll(t) : 0], 1,
				  memory_order_relaxed);
}

/* Copy an UNSAVED page into the open slot as a record of its own: it is SAFE. */
static int save_copy(struct uffdsnap *s, uint32_t ri, uint64_t idx, uint64_t t_read)
{
	struct snap_region *r = &s->r[ri];
	struct slot *sl;
	while (!(sl = room(s, REC_HDR + r->ps, 2, 1))) {
		if (atomic_load(&s->abort_req))
			return -1;
		wait_for_output(s, 0);
		release_written(s);
	}
	int zero = page_is_zero(s, ri, idx);
	if (zero < 0)
		return -1;
	struct rec_hdr *h = new_record(s, zero ? REC_ZERO : REC_PAGES, ri, idx);
	h->count = 1;
	if (!zero) {
		if (copy_page(s, ri, idx, sl->buf + sl->used, &h->data_crc) < 0)
			return -1;
		add_piece(sl, sl->buf + sl->used, r->ps);
		sl->used += r->ps;
	}
	make_safe(s, r, idx);
	atomic_fetch_add_explicit(zero ? &s->zero_pages : &s->data_pages, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->fault_pages, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->pages_saved, 1, memory_order_relaxed);
	account_service(s, t_read);
	return 0;
}

/* A QUEUED page whose slot the output has not taken yet: give the slot a copy of the page in
 * its place, so the page can be unprotected now. The copy lives in the open slot's buffer,
 * which is written (and reused) only after the queued slot. 0, or -1 if that cannot be done
 * now (the slot is being written: the writer waits for it). */
static int patch_queued(struct uffdsnap *s, uint32_t ri, uint64_t idx)
{
	struct snap_region *r = &s->r[ri];
	uint64_t seq = r->queued_in[idx / r->chunk_pages];
	struct slot *open;
	if (!(open = room(s, r->ps, 0, 1)))
		return -1;
	pthread_mutex_lock(&s->lock);
	struct slot *q = &s->slots[seq % s->n_slots];
	int ok = seq >= s->written + (uint64_t)s->writing && seq != s->committed &&
		 q->n_pieces + 2 <= q->cap_pieces;
	if (ok) {
		const uint8_t *page = page_at(s, ri, idx);
		uint8_t *copy = open->buf + open->used;
		uint32_t k = 0;
		while (k < q->n_pieces && !(q->pieces[k].ptr <= page &&
					    page < q->pieces[k].ptr + q->pieces[k].len))
			k++;
		if (k == q->n_pieces || copy_page(s, ri, idx, copy, NULL) < 0) {
			ok = 0;
		} else {
			/* [before][copy][after] in place of the piece holding the page */
			struct piece old = q->pieces[k];
			uint64_t before = (uint64_t)(page - old.ptr), after = old.len - before - r->ps;
			uint32_t extra = (before ? 1 : 0) + (after ? 1 : 0);
			memmove(&q->pieces[k + 1 + extra], &q->pieces[k + 1],
				(q->n_pieces - k - 1) * sizeof(struct piece));
			uint32_t at = k;
			if (before)
				q->pieces[at++] = (struct piece){ old.ptr, before };
			q->pieces[at++] = (struct piece){ copy, r->ps };
			if (after)
				q->pieces[at] = (struct piece){ page + r->ps, after };
			q->n_pieces += extra;
			open->used += r->ps;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (!ok)
		return -1;
	make_safe(s, r, idx);
	atomic_fetch_add_explicit(&s->patched, 1, memory_order_relaxed);
	return 0;
}

/* Save a faulted page out of order, then unprotect it, which wakes the writer. A fault just
 * ahead of the linear pass saves the pages after it too (the pass is about to reach them,
 * and a writer going through memory in order would fault on each). */
static void serve_fault(struct uffdsnap *s, uint64_t addr, uint64_t t_read)
{
	uint32_t ri;
	struct snap_region *r = region_of(s, addr, &ri);
	atomic_fetch_add_explicit(&s->faults, 1, memory_order_relaxed);
	if (!r) {
		uffdwp_wake(s->uffd, addr & ~(uint64_t)4095, 4096);
		return;
	}
	uint64_t idx = (addr - r->addr) / r->ps, page = r->addr + idx * r->ps;
	if (r->state[idx] == SAFE) {
		/* saved meanwhile: its unprotect woke the writer, or will (a written slot not
		 * released yet, or an event holding protection); wake in case the message
		 * outlived the wake-up */
		atomic_fetch_add_explicit(&s->faults_already, 1, memory_order_relaxed);
		/* a copy of it is saved: its chunk may still be protected, this page need not be */
		int ret = unprotect(s, page, r->ps);
		if (ret < 0)
			set_error_at(s, ret, UFFDSNAP_PHASE_UNPROTECT, page);
		uffdwp_wake(s->uffd, page, r->ps);
		return;
	}
	uint64_t n = 1;
	if (r->state[idx] == QUEUED) {
		if (patch_queued(s, ri, idx) < 0) {
			/* its slot is being written: the release afterwards wakes the writer */
			atomic_fetch_add_explicit(&s->faults_waited, 1, memory_order_relaxed);
			return;
		}
		account_service(s, t_read); /* counted as a page of the linear pass, where it is */
	} else {
		if (save_copy(s, ri, idx, t_read) < 0)
			return;
		/* just ahead of the pass: the rest of its batch window too, if still unsaved */
		if (r->batch_pages > 1 && idx >= r->next &&
		    idx - r->next < 4 * r->chunk_pages) {
			uint64_t end = (idx / r->batch_pages + 1) * r->batch_pages;
			end = end < r->pages ? end : r->pages;
			while (idx + n < end && r->state[idx + n] == UNSAVED &&
			       !atomic_load(&s->abort_req)) {
				if (save_copy(s, ri, idx + n, t_read) < 0)
					return;
				n++;
			}
			atomic_fetch_add_explicit(&s->batched, n - 1, memory_order_relaxed);
		}
	}
	int ret = unprotect(s, page, n * r->ps);
	if (ret < 0)
		set_error_at(s, ret, UFFDSNAP_PHASE_UNPROTECT, page);
}

/* Pages of [start, end) that are not safe: what a discard of that range would lose. */
static uint64_t unsaved_in(struct uffdsnap *s, uint64_t start, uint64_t end, uint64_t *first)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < s->n_regions; i++) {
		struct snap_region *r = &s->r[i];
		uint64_t lo = start > r->addr ? start : r->addr;
		uint64_t hi = end < r->addr + r->len ? end : r->addr + r->len;
		for (uint64_t a = lo; a < hi; a += r->ps)
			if (r->state[(a - r->addr) / r->ps] != SAFE && n++ == 0)
				*first = a;
	}
	return n;
}

static void release_child(struct uffdsnap *s, int child_uffd)
{
	/* The child's copy of the regions came with our protection: lift it there too, so the
	 * child never blocks on a fault nobody reads, then let its uffd go. */
	for (uint32_t i = 0; i < s->n_regions; i++) {
		uffdwp_writeprotect_settle(child_uffd, s->r[i].addr, s->r[i].len, 0);
		uffdwp_wake(child_uffd, s->r[i].addr, s->r[i].len);
	}
	close(child_uffd);
}

static void handle_event(struct uffdsnap *s, const struct uffd_msg *m)
{
	atomic_fetch_add(&s->events, 1);
	if (m->event == UFFD_EVENT_REMOVE) {
		/* Reading this let the discard go on. The engine reads only when no event was
		 * pending, so pages here are unsafe only if the discard started between that check
		 * and the read: then their content at the freeze may be gone, and the image would
		 * not be the memory at the freeze. */
		uint64_t first = 0;
		uint64_t lost = unsaved_in(s, m->arg.remove.start, m->arg.remove.end, &first);
		atomic_fetch_add(&s->discarded_bytes, m->arg.remove.end - m->arg.remove.start);
		if (lost)
			set_error_at(s, -ESTALE, UFFDSNAP_PHASE_DISCARD, first);
	} else if (m->event == UFFD_EVENT_FORK) {
		release_child(s, (int)m->arg.fork.ufd);
		if (s->fork_fails)
			set_error(s, -EBUSY, UFFDSNAP_PHASE_FORK);
	}
	/* REMAP and UNMAP are not asked for: a moved or unmapped region shows as unreadable. */
}

/* Read and serve pending messages; returns how many were read, or -1 on error. Reads only
 * while no event is pending or everything is safe: reading an event lets its thread go on,
 * and a discard must not run before the pages it drops are saved. */
static int serve_messages(struct uffdsnap *s)
{
	struct uffd_msg msgs[64];
	int total = 0;
	for (;;) {
		if (s->unsaved && uffdwp_event_pending(s->uffd)) {
			start_draining(s);
			return total;
		}
		ssize_t n = read(s->uffd, msgs, sizeof(msgs));
		if (n < 0) {
			if (errno == EAGAIN)
				return total;
			if (errno == EINTR)
				continue;
			set_error(s, -errno, UFFDSNAP_PHASE_READ);
			return -1;
		}
		uint64_t t_read = uffdwp_now_ns();
		int count = (int)(n / (ssize_t)sizeof(struct uffd_msg));
		for (int i = 0; i < count && !atomic_load(&s->abort_req); i++) {
			if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
				serve_fault(s, msgs[i].arg.pagefault.address, t_read);
			else
				handle_event(s, &msgs[i]);
		}
		total += count;
		if (count < 64 || atomic_load(&s->abort_req))
			return total;
	}
}

/* --- the linear pass -------------------------------------------------------------------------- */
/* One chunk: checksum its unsaved pages in place and queue a slot that refers to them (zero
 * pages as bare records); the output thread writes them straight from memory, and the chunk
 * is unprotected once it has. Returns 1 if it made progress, 0 if no slot is free, -1 when
 * every chunk is queued (or on error). */
static int linear_step(struct uffdsnap *s)
{
	while (s->cur_region < s->n_regions && s->r[s->cur_region].next >= s->r[s->cur_region].pages)
		s->cur_region++;
	if (s->cur_region >= s->n_regions)
		return -1;
	uint32_t ri = s->cur_region;
	struct snap_region *r = &s->r[ri];
	uint64_t first = r->next;
	uint64_t n = r->pages - first < r->chunk_pages ? r->pages - first : r->chunk_pages;
	/* pages the pagemap does not show protected are copied (and their CRC taken from the
	 * copy): written from memory, they could change between CRC and write */
	read_protection(s, r, first, n);
	uint64_t copies = 0;
	for (uint64_t k = 0; k < n; k++)
		copies += r->state[first + k] == UNSAVED && !(s->pm[k] & PM_UFFD_WP);
	/* a slot of its own: its pieces refer to this chunk only, released together */
	commit_slot(s);
	struct slot *sl = room(s, n * REC_HDR + copies * r->ps, 0, s->draining);
	if (!sl)
		return 0;
	uint64_t seq;
	pthread_mutex_lock(&s->lock);
	seq = s->committed;
	pthread_mutex_unlock(&s->lock);
	uint32_t run_type = 0;
	for (uint64_t i = first; i < first + n; i++) {
		if (r->state[i] != UNSAVED) { /* a writer faulted on it: saved out of order */
			close_run(s);
			run_type = 0;
			continue;
		}
		int zero = page_is_zero(s, ri, i);
		if (zero < 0)
			return -1;
		uint32_t type = zero ? REC_ZERO : REC_PAGES;
		if (!s->run || run_type != type) {
			new_record(s, type, ri, i);
			run_type = type;
		}
		s->run->count++;
		if (zero) {
			make_safe(s, r, i); /* nothing to write from memory */
			atomic_fetch_add_explicit(&s->zero_pages, 1, memory_order_relaxed);
		} else if (!(s->pm[i - first] & PM_UFFD_WP)) {
			if (copy_page(s, ri, i, sl->buf + sl->used, &s->run->data_crc) < 0)
				return -1;
			add_piece(sl, sl->buf + sl->used, r->ps);
			sl->used += r->ps;
			make_safe(s, r, i);
			atomic_fetch_add_explicit(&s->copied_unprotected, 1, memory_order_relaxed);
			atomic_fetch_add_explicit(&s->data_pages, 1, memory_order_relaxed);
		} else {
			if (page_crc(s, ri, i, &s->run->data_crc) < 0)
				return -1;
			add_piece(sl, page_at(s, ri, i), r->ps);
			r->state[i] = QUEUED;
			atomic_fetch_add_explicit(&s->data_pages, 1, memory_order_relaxed);
		}
		atomic_fetch_add_explicit(&s->linear_pages, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&s->pages_saved, 1, memory_order_relaxed);
	}
	r->queued_in[first / r->chunk_pages] = seq;
	r->next = first + n;
	sl->ref_region = (int32_t)ri;
	sl->ref_first = first;
	sl->ref_count = n;
	commit_slot(s);
	return 1;
}

static void *output_main(void *arg);

/* Remove all protection and wake every writer: the exit of every path. An event may hold
 * protection (EAGAIN) until it is read; it is read here once everything is saved (or the
 * snapshot failed anyway), so its thread goes on. Returns how many ranges failed. */
static int release_all(struct uffdsnap *s)
{
	int failures = 0;
	for (uint32_t i = 0; i < s->n_regions; i++) {
		struct snap_region *r = &s->r[i];
		uint64_t deadline = uffdwp_now_ns() + 10ull * 1000000000ull;
		int ret;
		for (;;) {
			ret = uffdwp_writeprotect_mapped(s->uffd, r->addr, r->len, 0,
							 uffdwp_writeprotect);
			if (ret != -EAGAIN || uffdwp_now_ns() > deadline)
				break;
			s->unsaved = 0; /* nothing left to protect from a discard: read events now */
			if (serve_messages(s) <= 0)
				usleep(100); /* read already; its thread has yet to clear the flag */
		}
		if (ret < 0 && ret != -ENOENT)
			failures++;
		ret = uffdwp_wake(s->uffd, r->addr, r->len);
		if (ret < 0 && ret != -ENOENT)
			failures++;
	}
	return failures;
}

static int populate_region(struct uffdsnap *s, uint32_t ri)
{
	/* Without UFFD_FEATURE_WP_UNPOPULATED an empty PTE cannot carry the WP bit, so a write to
	 * a never-touched page would not fault and escape the image. Read-populate maps the zero
	 * page (anon) or the page cache page, which protection then covers (QEMU does the same). */
	struct snap_region *r = &s->r[ri];
	if (madvise((void *)(uintptr_t)r->addr, r->len, MADV_POPULATE_READ) == 0)
		return 0;
	if (errno != EINVAL)
		return -errno;
	for (uint64_t i = 0; i < r->pages; i++) /* before 5.14: touch every page */
		if (page_is_zero(s, ri, i) < 0)
			return -EFAULT;
	return 0;
}

/* A faulting writer waits until the engine runs: on a busy machine a CFS time slice is
 * milliseconds, so the engine may run at a real-time priority (or a lower nice value). */
static void apply_priority(struct uffdsnap *s)
{
	if (s->priority > 0) {
		struct sched_param sp = { .sched_priority = s->priority };
		if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0) {
			atomic_store(&s->priority_applied, 1);
			return;
		}
	}
	if (s->priority != 0) {
		int nice_value = s->priority < 0 ? s->priority : -10;
		if (setpriority(PRIO_PROCESS, (id_t)gettid(), nice_value) == 0)
			atomic_store(&s->priority_applied, 2);
	}
}

/* Faults read before the freeze is complete: served once it is (no writer may go on before
 * every region is protected). */
#define MAX_EARLY 1024
struct early_fault {
	uint64_t addr, t_read;
};

/* An event is pending while the regions are being protected: read it (its thread waits for
 * that). A discard or a fork then happens before the cut, which is the freeze's end. */
static int read_before_cut(struct uffdsnap *s, struct early_fault *early, int *n_early)
{
	struct uffd_msg msgs[64];
	ssize_t n = read(s->uffd, msgs, sizeof(msgs));
	if (n <= 0)
		return 0;
	uint64_t t_read = uffdwp_now_ns();
	int count = (int)(n / (ssize_t)sizeof(struct uffd_msg));
	for (int i = 0; i < count; i++) {
		const struct uffd_msg *m = &msgs[i];
		if (m->event == UFFD_EVENT_PAGEFAULT) {
			if (*n_early < MAX_EARLY)
				early[(*n_early)++] = (struct early_fault){ m->arg.pagefault.address,
									    t_read };
			/* else: woken by the release at the end, like any other writer */
		} else if (m->event == UFFD_EVENT_FORK) {
			release_child(s, (int)m->arg.fork.ufd);
			if (s->fork_fails)
				set_error(s, -EBUSY, UFFDSNAP_PHASE_FORK);
			atomic_fetch_add(&s->events, 1);
		} else {
			if (m->event == UFFD_EVENT_REMOVE)
				atomic_fetch_add(&s->discarded_bytes,
						 m->arg.remove.end - m->arg.remove.start);
			atomic_fetch_add(&s->events, 1);
		}
	}
	return count;
}

static void freeze(struct uffdsnap *s)
{
	/* Protect every region before serving any fault, so no writer that faulted on one region
	 * is released before the last region is protected: a consistent cut. */
	struct early_fault *early = calloc(MAX_EARLY, sizeof(*early));
	int n_early = 0;
	uint64_t t0 = uffdwp_now_ns(), t1 = t0;
	if (!early) {
		set_error(s, -ENOMEM, UFFDSNAP_PHASE_PROTECT);
		return;
	}
	if (s->protect && !atomic_load(&s->abort_req)) {
		for (uint32_t i = 0; i < s->n_regions && !atomic_load(&s->abort_req); i++) {
			int ret;
			while ((ret = uffdwp_writeprotect_mapped(s->uffd, s->r[i].addr, s->r[i].len,
								 UFFDIO_WRITEPROTECT_MODE_WP,
								 uffdwp_writeprotect)) == -EAGAIN &&
			       !atomic_load(&s->abort_req))
				if (!read_before_cut(s, early, &n_early))
					usleep(50); /* read already; its thread has yet to go on */
			if (ret < 0 && ret != -EAGAIN) {
				set_error_at(s, ret, UFFDSNAP_PHASE_PROTECT, s->r[i].addr);
				break;
			}
		}
		t1 = uffdwp_now_ns();
	}
	/* one pair of readings: [t0, t1] brackets the protect ioctls exactly */
	atomic_store(&s->t_protect, t0);
	atomic_store(&s->protect_ns, t1 - t0);
	atomic_store(&s->t_frozen, t1);
	for (int k = 0; k < n_early && !atomic_load(&s->abort_req); k++)
		serve_fault(s, early[k].addr, early[k].t_read);
	free(early);
}

/* The end record, after every other: it counts pages and records, and carries the chain. */
static void put_end(struct uffdsnap *s)
{
	close_run(s);
	struct slot *sl;
	while (!(sl = room(s, REC_HDR, 1, 1))) {
		if (atomic_load(&s->abort_req))
			return;
		wait_for_output(s, 0);
		release_written(s);
	}
	struct rec_hdr *h = (struct rec_hdr *)(sl->buf + sl->used);
	*h = (struct rec_hdr){ .type = REC_END, .region = 0xffffffffu,
			       .first = atomic_load(&s->pages_saved),
			       .count = (uint32_t)atomic_load(&s->records), .data_crc = s->chain };
	seal_record(h, NULL);
	sl->used += REC_HDR;
	add_piece(sl, (const uint8_t *)h, REC_HDR);
	atomic_store(&s->chain_crc, s->chain);
	commit_slot(s);
}

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *engine_main(void *arg)
{
	struct uffdsnap *s = arg;
	apply_priority(s);
	atomic_store(&s->t_start, uffdwp_now_ns());
	int ret = memguard_take(&s->guard);
	if (ret < 0)
		set_error(s, ret, UFFDSNAP_PHASE_MEMORY);

	if (s->populate && !atomic_load(&s->abort_req)) {
		uint64_t t0 = uffdwp_now_ns();
		for (uint32_t i = 0; i < s->n_regions; i++) {
			ret = populate_region(s, i);
			if (ret < 0) {
				set_error_at(s, ret, UFFDSNAP_PHASE_POPULATE, s->r[i].addr);
				break;
			}
		}
		atomic_store(&s->populate_ns, uffdwp_now_ns() - t0);
	}
	freeze(s);

	while (!atomic_load(&s->abort_req)) {
		release_written(s);
		if (!s->unsaved)
			break; /* every page is in a written slot or a copy */
		int served = s->draining ? 0 : serve_messages(s);
		if (served < 0 || atomic_load(&s->abort_req))
			break;
		int step = linear_step(s);
		if (step < 0 && atomic_load(&s->abort_req))
			break;
		if (step <= 0 && served == 0) { /* ring full, or all queued: wait for the output */
			commit_slot(s);
			wait_for_output(s, !s->draining);
		}
	}
	if (!atomic_load(&s->abort_req))
		put_end(s);
	else
		s->cur = NULL;
	/* Every page is saved and unprotected on success; on any failure this is what lets the
	 * writers go. Either way nothing stays protected or blocked. */
	if (release_all(s) && !atomic_load(&s->error))
		set_error(s, -EIO, UFFDSNAP_PHASE_UNPROTECT);
	memguard_release(&s->guard);
	atomic_store(&s->engine_cpu_ns, thread_cpu_ns());
	pthread_mutex_lock(&s->lock);
	s->producer_done = 1;
	pthread_cond_signal(&s->ready);
	pthread_mutex_unlock(&s->lock);
	if (atomic_load(&s->abort_req))
		kick(s->output_evfd);
	pthread_join(s->output, NULL);
	s->output_started = 0;

	int32_t err = atomic_load(&s->error);
	int32_t final = UFFDSNAP_DONE;
	if (err)
		final = atomic_load(&s->error_phase) == UFFDSNAP_PHASE_ABORT ? UFFDSNAP_ABORTED
									      : UFFDSNAP_FAILED;
	else if (atomic_load(&s->abort_req))
		final = UFFDSNAP_ABORTED;
	atomic_store(&s->t_end, uffdwp_now_ns());
	pthread_mutex_lock(&s->lock);
	atomic_store(&s->state, final);
	s->finished = 1;
	pthread_cond_broadcast(&s->done_cv);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static void *output_main(void *arg)
{
	struct uffdsnap *s = arg;
	struct iovec iov[1024];
	block_sigpipe(NULL);
	for (;;) {
		pthread_mutex_lock(&s->lock);
		while (s->written == s->committed && !s->producer_done &&
		       !atomic_load(&s->abort_req))
			pthread_cond_wait(&s->ready, &s->lock);
		int stop = atomic_load(&s->abort_req) ||
			   (s->written == s->committed && s->producer_done);
		struct slot *sl = &s->slots[s->written % s->n_slots];
		s->writing = !stop; /* from here the engine no longer patches this slot */
		pthread_mutex_unlock(&s->lock);
		if (stop)
			break;
		/* the pieces, straight from the slot's buffer and from region memory */
		uint64_t bytes = 0;
		int ret = 0;
		for (uint32_t k = 0; k < sl->n_pieces && !ret;) {
			int n = 0;
			for (; k < sl->n_pieces && n < 1024; k++, n++) {
				iov[n].iov_base = (void *)(uintptr_t)sl->pieces[k].ptr;
				iov[n].iov_len = sl->pieces[k].len;
				bytes += sl->pieces[k].len;
			}
			ret = writev_full(s->out_fd, iov, n, s->out_nonblock ? s->output_evfd : -1,
					  s->stall_ms);
		}
		if (ret < 0) {
			drop_pending_sigpipe();
			if (ret == -EFAULT && sl->ref_region >= 0) /* the caller unmapped the chunk */
				set_error_at(s, -EFAULT, UFFDSNAP_PHASE_MEMORY,
					     s->r[sl->ref_region].addr +
					     sl->ref_first * s->r[sl->ref_region].ps);
			else
				set_error(s, ret, ret == -ECANCELED ? UFFDSNAP_PHASE_ABORT
								    : UFFDSNAP_PHASE_OUTPUT);
			pthread_mutex_lock(&s->lock);
			s->writing = 0;
			pthread_mutex_unlock(&s->lock);
			kick(s->engine_evfd);
			break;
		}
		atomic_fetch_add(&s->bytes_written, bytes);
		pthread_mutex_lock(&s->lock);
		s->written++;
		s->writing = 0;
		pthread_mutex_unlock(&s->lock);
		kick(s->engine_evfd);
	}
	atomic_store(&s->output_cpu_ns, thread_cpu_ns());
	return NULL;
}

static void snap_destroy(struct uffdsnap *s)
{
	if (s->uffd_flags >= 0)
		fcntl(s->uffd, F_SETFL, s->uffd_flags);
	if (s->slots)
		for (uint32_t i = 0; i < s->n_slots; i++) {
			if (s->slots[i].buf)
				munmap(s->slots[i].buf, s->slot_bytes);
			free(s->slots[i].pieces);
		}
	if (s->r)
		for (uint32_t i = 0; i < s->n_regions; i++) {
			free(s->r[i].state);
			free(s->r[i].queued_in);
		}
	free(s->slots);
	free(s->r);
	free(s->pm);
	if (s->pagemap_fd >= 0)
		close(s->pagemap_fd);
	if (s->engine_evfd >= 0)
		close(s->engine_evfd);
	if (s->output_evfd >= 0)
		close(s->output_evfd);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->ready);
	pthread_cond_destroy(&s->done_cv);
	free(s);
}

struct uffdsnap *uffdsnap_start(const struct uffdsnap_config *cfg, int *err)
{
	struct uffdsnap *s = calloc(1, sizeof(*s));
	if (!s) {
		*err = -ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->ready, NULL);
	pthread_cond_init(&s->done_cv, NULL);
	s->engine_evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->output_evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->uffd = cfg->uffd;
	s->uffd_flags = -1;
	s->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	s->out_fd = cfg->out_fd;
	s->stall_ms = cfg->stall_timeout_ms;
	s->fork_fails = cfg->fork_fails;
	s->out_nonblock = cfg->out_nonblock;
	s->populate = cfg->populate;
	s->protect = cfg->protect;
	s->priority = cfg->engine_priority;
	s->n_regions = cfg->n_regions;
	uint64_t chunk_bytes = cfg->chunk_bytes ? cfg->chunk_bytes : 128 * 1024;
	s->busy_poll_us = cfg->busy_poll_us;
	s->n_slots = cfg->n_slots >= 2 ? cfg->n_slots : 32;
	s->reserve = cfg->reserve_slots < s->n_slots ? cfg->reserve_slots : s->n_slots / 4;
	if (s->engine_evfd < 0 || s->output_evfd < 0) {
		*err = -errno;
		goto fail;
	}
	if (!cfg->n_regions || !cfg->regions || (cfg->prefix_len && !cfg->prefix)) {
		*err = -EINVAL;
		goto fail;
	}
	s->r = calloc(cfg->n_regions, sizeof(*s->r));
	if (!s->r)
		goto nomem;
	uint64_t need = cfg->prefix_len, max_chunk_pages = 1;
	for (uint32_t i = 0; i < cfg->n_regions; i++) {
		const struct uffdsnap_region *in = &cfg->regions[i];
		struct snap_region *r = &s->r[i];
		/* whole pages of a power-of-two size, no wrap-around, no overlap with another
		 * region (a page would be saved twice, and its record would not match memory) */
		if (!in->page_size || in->page_size & (in->page_size - 1) || in->page_size < 4096 ||
		    !in->length || in->length % in->page_size || in->address % in->page_size ||
		    in->address + in->length < in->address) {
			*err = -EINVAL;
			goto fail;
		}
		for (uint32_t j = 0; j < i; j++)
			if (in->address < s->r[j].addr + s->r[j].len &&
			    s->r[j].addr < in->address + in->length) {
				*err = -EINVAL;
				goto fail;
			}
		r->addr = in->address;
		r->len = in->length;
		r->ps = in->page_size;
		r->pages = in->length / in->page_size;
		uint64_t chunk = in->chunk_bytes ? in->chunk_bytes : chunk_bytes;
		r->chunk_pages = chunk / r->ps ? chunk / r->ps : 1;
		uint64_t batch = in->fault_batch_bytes ? in->fault_batch_bytes : 64 * 1024;
		r->batch_pages = batch / r->ps ? batch / r->ps : 1;
		r->state = calloc(r->pages, 1);
		r->queued_in = calloc((r->pages + r->chunk_pages - 1) / r->chunk_pages,
				      sizeof(uint64_t));
		if (!r->state || !r->queued_in)
			goto nomem;
		s->pages_total += r->pages;
		s->unsaved += r->pages;
		/* a chunk whose pages the pagemap does not show protected is copied whole */
		if (r->chunk_pages * (REC_HDR + r->ps) > need)
			need = r->chunk_pages * (REC_HDR + r->ps);
		if (r->chunk_pages > max_chunk_pages)
			max_chunk_pages = r->chunk_pages;
	}
	s->slot_bytes = cfg->slot_bytes > need ? cfg->slot_bytes : need;
	s->slot_bytes = (s->slot_bytes + 4095) & ~(uint64_t)4095;
	/* a chunk is at most a header and a run per page, plus pages given copies meanwhile; an
	 * open slot at most one piece per page copied into it for another slot */
	uint32_t cap = (uint32_t)(2 * max_chunk_pages + 130);
	if (s->slot_bytes / 4096 + 2 > cap)
		cap = (uint32_t)(s->slot_bytes / 4096 + 2);
	s->slots = calloc(s->n_slots, sizeof(*s->slots));
	s->pm = calloc(max_chunk_pages, sizeof(uint64_t));
	if (!s->slots || !s->pm)
		goto nomem;
	for (uint32_t i = 0; i < s->n_slots; i++) {
		void *p = mmap(NULL, s->slot_bytes, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (p == MAP_FAILED)
			goto nomem;
		s->slots[i].buf = p;
		s->slots[i].ref_region = -1;
		s->slots[i].cap_pieces = cap;
		s->slots[i].pieces = calloc(cap, sizeof(struct piece));
		if (!s->slots[i].pieces)
			goto nomem;
	}
	/* userfaultfd's poll() answers POLLERR on a blocking fd: the engine needs O_NONBLOCK
	 * (the caller's setting comes back when the snapshot is freed). */
	int fl = fcntl(s->uffd, F_GETFL);
	if (fl < 0 || fcntl(s->uffd, F_SETFL, fl | O_NONBLOCK) < 0) {
		*err = -errno;
		goto fail;
	}
	s->uffd_flags = fl;
	if (cfg->prefix_len) { /* the header goes out first, in a slot of its own */
		memcpy(s->slots[0].buf, cfg->prefix, cfg->prefix_len);
		s->slots[0].used = cfg->prefix_len;
		add_piece(&s->slots[0], s->slots[0].buf, cfg->prefix_len);
		s->committed = 1;
		atomic_store(&s->bytes_committed, cfg->prefix_len);
	}
	int ret = pthread_create(&s->output, NULL, output_main, s);
	if (ret) {
		*err = -ret;
		goto fail;
	}
	s->output_started = 1;
	ret = pthread_create(&s->engine, NULL, engine_main, s);
	if (ret) {
		atomic_store(&s->abort_req, 1);
		pthread_mutex_lock(&s->lock);
		pthread_cond_signal(&s->ready);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->output, NULL);
		*err = -ret;
		goto fail;
	}
	s->engine_started = 1;
	*err = 0;
	return s;
nomem:
	*err = -ENOMEM;
fail:
	snap_destroy(s);
	return NULL;
}

void uffdsnap_get_stats(struct uffdsnap *s, struct uffdsnap_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!s)
		return;
	out->events = atomic_load(&s->events);
	out->faults_waited = atomic_load(&s->faults_waited);
	out->engine_cpu_ns = atomic_load(&s->engine_cpu_ns);
	out->output_cpu_ns = atomic_load(&s->output_cpu_ns);
	out->copied_unprotected = atomic_load(&s->copied_unprotected);
	out->patched = atomic_load(&s->patched);
	out->batched = atomic_load(&s->batched);
	out->drains = atomic_load(&s->drains);
	out->discarded_bytes = atomic_load(&s->discarded_bytes);
	out->error_addr = atomic_load(&s->error_addr);
	out->pages_total = s->pages_total;
	out->pages_saved = atomic_load(&s->pages_saved);
	out->linear_pages = atomic_load(&s->linear_pages);
	out->fault_pages = atomic_load(&s->fault_pages);
	out->zero_pages = atomic_load(&s->zero_pages);
	out->data_pages = atomic_load(&s->data_pages);
	out->faults = atomic_load(&s->faults);
	out->faults_already_saved = atomic_load(&s->faults_already);
	out->records = atomic_load(&s->records);
	out->bytes_committed = atomic_load(&s->bytes_committed);
	out->bytes_written = atomic_load(&s->bytes_written);
	out->t_start_ns = atomic_load(&s->t_start);
	out->t_protect_ns = atomic_load(&s->t_protect);
	out->t_frozen_ns = atomic_load(&s->t_frozen);
	out->t_saved_ns = atomic_load(&s->t_saved);
	out->t_end_ns = atomic_load(&s->t_end);
	out->populate_ns = atomic_load(&s->populate_ns);
	out->protect_ns = atomic_load(&s->protect_ns);
	out->service_max_ns = atomic_load(&s->service_max);
	out->service_total_ns = atomic_load(&s->service_total);
	for (int i = 0; i < 64; i++)
		out->service_hist[i] = atomic_load(&s->service_hist[i]);
	out->ring_waits = atomic_load(&s->ring_waits);
	out->priority_applied = atomic_load(&s->priority_applied);
	out->state = atomic_load(&s->state);
	out->error = atomic_load(&s->error);
	out->error_phase = atomic_load(&s->error_phase);
	out->chain_crc = atomic_load(&s->chain_crc);
}

int uffdsnap_wait(struct uffdsnap *s, int timeout_ms)
{
	if (!s)
		return 0;
	struct timespec ts = uffdwp_deadline(timeout_ms);
	int ret = 0;
	pthread_mutex_lock(&s->lock);
	while (!s->finished && ret == 0)
		ret = pthread_cond_timedwait(&s->done_cv, &s->lock, &ts);
	int finished = s->finished;
	pthread_mutex_unlock(&s->lock);
	return finished ? 0 : -ETIMEDOUT;
}

void uffdsnap_abort(struct uffdsnap *s)
{
	if (!s)
		return;
	int32_t zero = 0;
	if (atomic_compare_exchange_strong(&s->error, &zero, -ECANCELED))
		atomic_store(&s->error_phase, UFFDSNAP_PHASE_ABORT);
	atomic_store(&s->abort_req, 1);
	kick(s->engine_evfd);
	kick(s->output_evfd);
	pthread_mutex_lock(&s->lock);
	pthread_cond_broadcast(&s->ready);
	pthread_mutex_unlock(&s->lock);
}

int uffdsnap_free(struct uffdsnap *s)
{
	if (!s)
		return 0;
	pthread_mutex_lock(&s->lock);
	int finished = s->finished;
	pthread_mutex_unlock(&s->lock);
	if (!finished)
		uffdsnap_abort(s);
	if (s->engine_started)
		pthread_join(s->engine, NULL);
	int failures = release_all(s);
	snap_destroy(s);
	return -failures;
}

