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

/* ----------------------------------------------------------------------------------------------
 * engine
 */
struct snap_region {
	uint64_t addr, len, ps, pages, next;
	uint8_t *saved; /* one byte per page: written only by the engine thread */
};

struct slot {
	uint8_t *buf;
	uint64_t used;
	int raw; /* the image header: written as is, no records to seal */
};

struct uffdsnap {
	pthread_t engine, output;
	int engine_started, output_started;
	int uffd, uffd_flags, out_fd, out_nonblock, populate, protect, priority, fork_fails;
	int stall_ms;
	_Atomic int32_t priority_applied;
	int engine_evfd; /* output -> engine: a slot was freed, or abort */
	int output_evfd; /* abort -> output thread stuck in poll() */
	uint32_t n_regions;
	struct snap_region *r;
	uint64_t pages_total, chunk_bytes;
	uint32_t cur_region;
	struct memguard guard; /* the engine thread's: the caller may unmap a region under it */
	int draining;          /* an event is pending: save everything before reading it */
	uint64_t unsaved;      /* pages not saved yet (engine thread only) */

	/* ring: slot sequence numbers; slot k lives at slots[k % n_slots] */
	struct slot *slots;
	uint32_t n_slots, reserve;
	uint64_t slot_bytes;
	pthread_mutex_t lock;
	pthread_cond_t ready;   /* engine -> output: a slot was committed, or the end */
	pthread_cond_t done_cv; /* -> uffdsnap_wait */
	uint64_t committed, written; /* under lock */
	int producer_done;           /* under lock */
	int finished;                /* under lock: engine thread has set its final state */
	struct slot *cur;            /* engine's open slot (sequence == committed) or NULL */

	_Atomic int abort_req;
	_Atomic int32_t state, error, error_phase;
	_Atomic uint32_t chain_crc;
	_Atomic uint64_t pages_saved, linear_pages, fault_pages, zero_pages, data_pages, faults,
		faults_already, records, bytes_committed, bytes_written, t_start, t_protect, t_frozen,
		t_saved, t_end, populate_ns, protect_ns, service_max, service_total, ring_waits,
		events, drains, discarded_bytes, error_addr;
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

static void commit_slot(struct uffdsnap *s)
{
	if (!s->cur)
		return;
	atomic_fetch_add(&s->bytes_committed, s->cur->used);
	pthread_mutex_lock(&s->lock);
	s->committed++;
	pthread_cond_signal(&s->ready);
	pthread_mutex_unlock(&s->lock);
	s->cur = NULL;
}

/* Room for `need` bytes in the open slot, opening a new one if needed. The linear pass leaves
 * `reserve` slots free so a faulting writer finds room at once. NULL: no room now. */
static uint8_t *room(struct uffdsnap *s, uint64_t need, int for_fault)
{
	if (s->cur && s->cur->used + need <= s->slot_bytes)
		return s->cur->buf + s->cur->used;
	commit_slot(s);
	pthread_mutex_lock(&s->lock);
	uint64_t free_slots = s->n_slots - (s->committed - s->written);
	uint64_t seq = s->committed;
	pthread_mutex_unlock(&s->lock);
	if (free_slots == 0 || (!for_fault && free_slots <= s->reserve))
		return NULL;
	s->cur = &s->slots[seq % s->n_slots];
	s->cur->used = 0;
	s->cur->raw = 0;
	return s->cur->buf;
}

static void wait_for_output(struct uffdsnap *s, int also_uffd)
{
	atomic_fetch_add(&s->ring_waits, 1);
	struct pollfd pf[2] = { { .fd = s->engine_evfd, .events = POLLIN },
				{ .fd = s->uffd, .events = POLLIN } };
	if (poll(pf, also_uffd ? 2 : 1, 100) > 0 && pf[0].revents)
		drain_evfd(s->engine_evfd);
}

static struct rec_hdr *put_header(struct uffdsnap *s, uint8_t *at, uint32_t type,
				  uint32_t region, uint64_t first, uint32_t count)
{
	struct rec_hdr *h = (struct rec_hdr *)at;
	memset(h, 0, sizeof(*h));
	h->type = type;
	h->region = region;
	h->first = first;
	h->count = count;
	s->cur->used += REC_HDR;
	atomic_fetch_add_explicit(&s->records, 1, memory_order_relaxed);
	return h;
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
static const void *page_at(struct uffdsnap *s, uint32_t ri, uint64_t idx)
{
	return (const void *)(uintptr_t)(s->r[ri].addr + idx * s->r[ri].ps);
}

/* 1 if the page is all zero, 0 if not, -EFAULT if it is not mapped (the snapshot fails). */
static int page_is_zero(struct uffdsnap *s, uint32_t ri, uint64_t idx)
{
	const void *page = page_at(s, ri, idx);
	if (sigsetjmp(s->guard.jb, 0)) {
		set_error_at(s, -EFAULT, UFFDSNAP_PHASE_MEMORY, (uint64_t)(uintptr_t)page);
		return -EFAULT;
	}
	memguard_arm(&s->guard, (uintptr_t)page, (uintptr_t)page + s->r[ri].ps);
	int zero = uffdsnap_is_zero(page, s->r[ri].ps);
	memguard_disarm(&s->guard);
	return zero;
}

/* Copy the page to dst, extending *crc; 0 or -EFAULT (the snapshot fails). */
static int copy_page(struct uffdsnap *s, uint32_t ri, uint64_t idx, uint8_t *dst, uint32_t *crc)
{
	const void *page = page_at(s, ri, idx);
	if (sigsetjmp(s->guard.jb, 0)) {
		set_error_at(s, -EFAULT, UFFDSNAP_PHASE_MEMORY, (uint64_t)(uintptr_t)page);
		return -EFAULT;
	}
	memguard_arm(&s->guard, (uintptr_t)page, (uintptr_t)page + s->r[ri].ps);
	*crc = uffdwp_copy_crc(dst, page, s->r[ri].ps, *crc);
	memguard_disarm(&s->guard);
	return 0;
}

static int unprotect(struct uffdsnap *s, uint64_t start, uint64_t len)
{
	int ret = uffdwp_writeprotect(s->uffd, start, len, 0);
	if (ret == -EAGAIN) {
		/* An event is pending: protection stays until everything is saved (drain). */
		s->draining = 1;
		return 0;
	}
	if (ret == -ENOENT || ret == -EINVAL) /* split or punched by the caller: piece by piece */
		ret = uffdwp_writeprotect_mapped(s->uffd, start, len, 0, uffdwp_writeprotect);
	if (ret == -EAGAIN) {
		s->draining = 1;
		return 0;
	}
	return ret;
}

static void mark_saved(struct uffdsnap *s, struct snap_region *r, uint64_t idx)
{
	r->saved[idx] = 1;
	s->unsaved--;
}

/* Save a faulted page out of order, then unprotect it, which wakes the writer. */
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
	if (r->saved[idx]) {
		/* saved and unprotected after the fault was queued: that unprotect woke it; wake
		 * again in case the message outlived the wake-up (or protection is still on because
		 * an event held it: the release at the end lifts it) */
		atomic_fetch_add_explicit(&s->faults_already, 1, memory_order_relaxed);
		uffdwp_wake(s->uffd, page, r->ps);
		return;
	}
	uint8_t *at;
	while (!(at = room(s, REC_HDR + r->ps, 1))) { /* room for a data page; a zero one uses less */
		if (atomic_load(&s->abort_req))
			return;
		wait_for_output(s, 0);
	}
	int zero = page_is_zero(s, ri, idx);
	if (zero < 0)
		return;
	struct rec_hdr *h = put_header(s, at, zero ? REC_ZERO : REC_PAGES, ri, idx, 1);
	if (!zero) {
		if (copy_page(s, ri, idx, at + REC_HDR, &h->data_crc) < 0)
			return;
		s->cur->used += r->ps;
	}
	mark_saved(s, r, idx);
	int ret = unprotect(s, page, r->ps);
	uint64_t t = uffdwp_now_ns() - t_read;
	if (ret < 0)
		set_error_at(s, ret, UFFDSNAP_PHASE_UNPROTECT, page);
	atomic_fetch_add_explicit(zero ? &s->zero_pages : &s->data_pages, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->fault_pages, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->pages_saved, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->service_total, t, memory_order_relaxed);
	if (t > atomic_load_explicit(&s->service_max, memory_order_relaxed))
		atomic_store_explicit(&s->service_max, t, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->service_hist[t ? 63 - __builtin_clzll(t) : 0], 1,
				  memory_order_relaxed);
}

/* Pages of [start, end) that are not saved: what a discard of that range would lose. */
static uint64_t unsaved_in(struct uffdsnap *s, uint64_t start, uint64_t end, uint64_t *first)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < s->n_regions; i++) {
		struct snap_region *r = &s->r[i];
		uint64_t lo = start > r->addr ? start : r->addr;
		uint64_t hi = end < r->addr + r->len ? end : r->addr + r->len;
		for (uint64_t a = lo; a < hi; a += r->ps)
			if (!r->saved[(a - r->addr) / r->ps] && n++ == 0)
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
		 * pending, so pages here are unsaved only if the discard started between that check
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
 * while no event is pending or everything is saved: reading an event lets its thread go on,
 * and a discard must not run before the pages it drops are saved. */
static int serve_messages(struct uffdsnap *s)
{
	struct uffd_msg msgs[64];
	int total = 0;
	for (;;) {
		if (s->unsaved && uffdwp_event_pending(s->uffd)) {
			s->draining = 1;
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

/* One chunk of the linear pass: copy what is not saved yet (zero pages as bare records), then
 * unprotect the chunk (not while draining: an event holds protection until all is saved).
 * Returns 1 if it made progress, 0 if the ring is full, -1 at the end or on error. */
static int linear_step(struct uffdsnap *s)
{
	while (s->cur_region < s->n_regions && s->r[s->cur_region].next >= s->r[s->cur_region].pages)
		s->cur_region++;
	if (s->cur_region >= s->n_regions)
		return -1;
	uint32_t ri = s->cur_region;
	struct snap_region *r = &s->r[ri];
	uint64_t chunk = s->chunk_bytes / r->ps ? s->chunk_bytes / r->ps : 1;
	uint64_t first = r->next, n = r->pages - first < chunk ? r->pages - first : chunk;
	uint8_t *at = room(s, n * (REC_HDR + r->ps), s->draining);
	if (!at)
		return 0;
	struct rec_hdr *run = NULL;
	uint32_t run_type = 0;
	uint64_t saved_here = 0;
	for (uint64_t i = first; i < first + n; i++) {
		if (r->saved[i]) { /* a writer faulted on it: already saved out of order */
			run = NULL;
			continue;
		}
		int zero = page_is_zero(s, ri, i);
		if (zero < 0)
			return -1;
		uint32_t type = zero ? REC_ZERO : REC_PAGES;
		if (!run || run_type != type) {
			run = put_header(s, s->cur->buf + s->cur->used, type, ri, i, 0);
			run_type = type;
		}
		run->count++;
		if (type == REC_PAGES) {
			if (copy_page(s, ri, i, s->cur->buf + s->cur->used, &run->data_crc) < 0)
				return -1;
			s->cur->used += r->ps;
			atomic_fetch_add_explicit(&s->data_pages, 1, memory_order_relaxed);
		} else {
			atomic_fetch_add_explicit(&s->zero_pages, 1, memory_order_relaxed);
		}
		mark_saved(s, r, i);
		saved_here++;
	}
	r->next = first + n;
	atomic_fetch_add_explicit(&s->linear_pages, saved_here, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->pages_saved, saved_here, memory_order_relaxed);
	if (!s->draining) {
		int ret = unprotect(s, r->addr + first * r->ps, n * r->ps);
		if (ret < 0)
			set_error_at(s, ret, UFFDSNAP_PHASE_UNPROTECT, r->addr + first * r->ps);
	}
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
		int was_draining = s->draining;
		int served = s->draining ? 0 : serve_messages(s);
		if (served < 0 || atomic_load(&s->abort_req))
			break;
		if (s->draining && !was_draining)
			atomic_fetch_add(&s->drains, 1);
		int step = linear_step(s);
		if (step < 0)
			break;
		if (step == 0 && served == 0) /* ring full: sleep until room (or a fault) */
			wait_for_output(s, !s->draining);
	}
	if (!atomic_load(&s->abort_req)) {
		atomic_store(&s->t_saved, uffdwp_now_ns());
		commit_slot(s);
	} else {
		s->cur = NULL;
	}
	/* Every page is saved and unprotected on success; on any failure this is what lets the
	 * writers go. Either way nothing stays protected or blocked. */
	if (release_all(s) && !atomic_load(&s->error))
		set_error(s, -EIO, UFFDSNAP_PHASE_UNPROTECT);
	memguard_release(&s->guard);
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

/* Seal every record header of a slot, in order (the chain covers record order); the data
 * CRCs were computed by the engine as it copied. */
static void seal_slot(struct uffdsnap *s, struct slot *sl, uint32_t *chain)
{
	uint64_t off = 0;
	while (off < sl->used) {
		struct rec_hdr *h = (struct rec_hdr *)(sl->buf + off);
		uint64_t data = h->type == REC_PAGES ? (uint64_t)h->count * s->r[h->region].ps : 0;
		seal_record(h, chain);
		off += REC_HDR + data;
	}
}

static void *output_main(void *arg)
{
	struct uffdsnap *s = arg;
	uint32_t chain = 0;
	block_sigpipe(NULL);
	for (;;) {
		pthread_mutex_lock(&s->lock);
		while (s->written == s->committed && !s->producer_done &&
		       !atomic_load(&s->abort_req))
			pthread_cond_wait(&s->ready, &s->lock);
		int aborting = atomic_load(&s->abort_req);
		int end = s->written == s->committed && s->producer_done;
		struct slot *sl = &s->slots[s->written % s->n_slots];
		pthread_mutex_unlock(&s->lock);
		if (aborting)
			break;
		if (end) {
			struct rec_hdr h = { .type = REC_END, .region = 0xffffffffu,
					     .first = atomic_load(&s->pages_saved),
					     .count = (uint32_t)atomic_load(&s->records),
					     .data_crc = chain };
			seal_record(&h, NULL);
			int ret = write_full(s->out_fd, &h, REC_HDR,
					     s->out_nonblock ? s->output_evfd : -1, s->stall_ms);
			if (ret < 0) {
				drop_pending_sigpipe();
				set_error(s, ret, UFFDSNAP_PHASE_OUTPUT);
			} else {
				atomic_fetch_add(&s->bytes_written, REC_HDR);
				atomic_store(&s->chain_crc, chain);
			}
			break;
		}
		if (!sl->raw)
			seal_slot(s, sl, &chain);
		int ret = write_full(s->out_fd, sl->buf, sl->used,
				     s->out_nonblock ? s->output_evfd : -1, s->stall_ms);
		if (ret < 0) {
			drop_pending_sigpipe();
			set_error(s, ret == -ECANCELED ? -ECANCELED : ret,
				  ret == -ECANCELED ? UFFDSNAP_PHASE_ABORT : UFFDSNAP_PHASE_OUTPUT);
			kick(s->engine_evfd);
			break;
		}
		atomic_fetch_add(&s->bytes_written, sl->used);
		pthread_mutex_lock(&s->lock);
		s->written++;
		pthread_mutex_unlock(&s->lock);
		kick(s->engine_evfd);
	}
	return NULL;
}

static void snap_destroy(struct uffdsnap *s)
{
	if (s->uffd_flags >= 0)
		fcntl(s->uffd, F_SETFL, s->uffd_flags);
	if (s->slots)
		for (uint32_t i = 0; i < s->n_slots; i++)
			if (s->slots[i].buf)
				munmap(s->slots[i].buf, s->slot_bytes);
	if (s->r)
		for (uint32_t i = 0; i < s->n_regions; i++)
			free(s->r[i].saved);
	free(s->slots);
	free(s->r);
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
	s->out_fd = cfg->out_fd;
	s->stall_ms = cfg->stall_timeout_ms;
	s->fork_fails = cfg->fork_fails;
	s->out_nonblock = cfg->out_nonblock;
	s->populate = cfg->populate;
	s->protect = cfg->protect;
	s->priority = cfg->engine_priority;
	s->n_regions = cfg->n_regions;
	s->chunk_bytes = cfg->chunk_bytes ? cfg->chunk_bytes : 128 * 1024;
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
	uint64_t need = cfg->prefix_len;
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
		r->saved = calloc(r->pages, 1);
		if (!r->saved)
			goto nomem;
		s->pages_total += r->pages;
		s->unsaved += r->pages;
		uint64_t chunk = s->chunk_bytes / r->ps ? s->chunk_bytes / r->ps : 1;
		if (chunk * (REC_HDR + r->ps) > need)
			need = chunk * (REC_HDR + r->ps);
	}
	s->slot_bytes = cfg->slot_bytes > need ? cfg->slot_bytes : need;
	s->slot_bytes = (s->slot_bytes + 4095) & ~(uint64_t)4095;
	s->slots = calloc(s->n_slots, sizeof(*s->slots));
	if (!s->slots)
		goto nomem;
	for (uint32_t i = 0; i < s->n_slots; i++) {
		void *p = mmap(NULL, s->slot_bytes, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (p == MAP_FAILED)
			goto nomem;
		s->slots[i].buf = p;
	}
	/* userfaultfd's poll() answers POLLERR on a blocking fd: the engine needs O_NONBLOCK
	 * (the caller's setting comes back when the snapshot is freed). */
	int fl = fcntl(s->uffd, F_GETFL);
	if (fl < 0 || fcntl(s->uffd, F_SETFL, fl | O_NONBLOCK) < 0) {
		*err = -errno;
		goto fail;
	}
	s->uffd_flags = fl;
	if (cfg->prefix_len) { /* the header goes out first, as a raw slot */
		memcpy(s->slots[0].buf, cfg->prefix, cfg->prefix_len);
		s->slots[0].used = cfg->prefix_len;
		s->slots[0].raw = 1;
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

