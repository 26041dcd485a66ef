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
#include "snapshot_native.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* 5.14 */
#endif

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

/* ----------------------------------------------------------------------------------------------
 * CRC32C (Castagnoli): SSE4.2 where the CPU has it, else slicing by table.
 */
static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_hw;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[i] = c;
	}
#if defined(__x86_64__)
	__builtin_cpu_init();
	crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

#if defined(__x86_64__)
#include <nmmintrin.h>
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p,
							     uint64_t n)
{
	uint64_t c = ~crc;
	while (n && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8((uint32_t)c, *p++);
		n--;
	}
	while (n >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = _mm_crc32_u64(c, v);
		p += 8;
		n -= 8;
	}
	while (n--)
		c = _mm_crc32_u8((uint32_t)c, *p++);
	return ~(uint32_t)c;
}
#endif

#if defined(__x86_64__)
/* Copy and checksum in one pass: the bytes are in a register anyway, so the CRC costs next to
 * nothing over the copy, and the output thread is left with nothing but write(2). */
__attribute__((target("sse4.2"))) static uint32_t copy_crc_hw(void *dst, const void *src,
							      uint64_t n, uint32_t crc)
{
	uint64_t c = ~crc;
	const uint8_t *p = src;
	uint8_t *d = dst;
	for (; n >= 32; n -= 32, p += 32, d += 32) {
		uint64_t v[4];
		memcpy(v, p, 32);
		c = _mm_crc32_u64(c, v[0]);
		c = _mm_crc32_u64(c, v[1]);
		c = _mm_crc32_u64(c, v[2]);
		c = _mm_crc32_u64(c, v[3]);
		memcpy(d, v, 32);
	}
	for (; n; n--) {
		*d++ = *p;
		c = _mm_crc32_u8((uint32_t)c, *p++);
	}
	return ~(uint32_t)c;
}
#endif

static uint32_t copy_crc(void *dst, const void *src, uint64_t n, uint32_t crc)
{
	pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
	if (crc_hw)
		return copy_crc_hw(dst, src, n, crc);
#endif
	memcpy(dst, src, n);
	return uffdsnap_crc32c(crc, dst, n);
}

uint32_t uffdsnap_crc32c(uint32_t crc, const void *buf, uint64_t len)
{
	pthread_once(&crc_once, crc_init);
	const uint8_t *p = buf;
#if defined(__x86_64__)
	if (crc_hw)
		return crc32c_hw(crc, p, len);
#endif
	uint32_t c = ~crc;
	while (len--)
		c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
	return ~c;
}

int uffdsnap_is_zero(const void *buf, uint64_t len)
{
	const uint64_t *q = buf;
	uint64_t words = len / 8, i = 0;
	/* OR eight words at a time: the compiler vectorizes it; a non-zero page usually exits in
	 * the first 64 bytes. */
	for (; i + 8 <= words; i += 8)
		if (q[i] | q[i + 1] | q[i + 2] | q[i + 3] | q[i + 4] | q[i + 5] | q[i + 6] | q[i + 7])
			return 0;
	for (; i < words; i++)
		if (q[i])
			return 0;
	const uint8_t *b = (const uint8_t *)(q + words);
	for (uint64_t k = 0; k < len % 8; k++)
		if (b[k])
			return 0;
	return 1;
}

static void seal_header(struct rec_hdr *h, uint32_t *chain)
{
	h->magic = REC_MAGIC;
	h->header_crc = uffdsnap_crc32c(0, h, offsetof(struct rec_hdr, header_crc));
	/* The chain covers the 28 bytes before header_crc: a CRC over a message followed by its
	 * own CRC is a constant, so chaining whole self-checked headers would prove nothing. */
	if (chain)
		*chain = uffdsnap_crc32c(*chain, h, offsetof(struct rec_hdr, header_crc));
}

/* write(2) everything, riding out EINTR and short writes; on a non-blocking fd wait in poll()
 * for room or for stop_fd (so an abort interrupts a stuck reader). */
static int write_full(int fd, const void *buf, uint64_t len, int stop_fd)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len > (1u << 30) ? (1u << 30) : len);
		if (n > 0) {
			p += n;
			len -= (uint64_t)n;
			continue;
		}
		if (n == 0)
			return -EIO;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		struct pollfd pf[2] = { { .fd = fd, .events = POLLOUT },
					{ .fd = stop_fd, .events = POLLIN } };
		if (poll(pf, stop_fd >= 0 ? 2 : 1, 1000) < 0 && errno != EINTR)
			return -errno;
		if (stop_fd >= 0 && pf[1].revents)
			return -ECANCELED;
		if (pf[0].revents & (POLLERR | POLLHUP) && !(pf[0].revents & POLLOUT))
			return -EPIPE;
	}
	return 0;
}

/* A SIGPIPE raised by our own write must not kill the process: block it in this thread, and
 * consume the one a failed write left pending. */
static void block_sigpipe(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static void drop_pending_sigpipe(void)
{
	sigset_t set;
	struct timespec zero = { 0, 0 };
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	while (sigtimedwait(&set, NULL, &zero) == SIGPIPE)
		;
}

static int wp_range(int uffd, uint64_t start, uint64_t len, int protect)
{
	return uffdwp_writeprotect(uffd, start, len, protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0);
}

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
	int uffd, out_fd, out_nonblock, populate, protect, priority;
	_Atomic int32_t priority_applied;
	int engine_evfd; /* output -> engine: a slot was freed, or abort */
	int output_evfd; /* abort -> output thread stuck in poll() */
	uint32_t n_regions;
	struct snap_region *r;
	uint64_t pages_total, chunk_bytes;
	uint32_t cur_region;

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
		t_saved, t_end, populate_ns, protect_ns, service_max, service_total, ring_waits;
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

static void kick(int evfd)
{
	uint64_t one = 1;
	ssize_t ret = write(evfd, &one, sizeof(one));
	(void)ret;
}

static void drain(int evfd)
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
		drain(s->engine_evfd);
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

/* Save a faulted page out of order, then unprotect it, which wakes the writer. */
static void serve_fault(struct uffdsnap *s, uint64_t addr, uint64_t t_read)
{
	uint32_t ri;
	struct snap_region *r = region_of(s, addr, &ri);
	atomic_fetch_add_explicit(&s->faults, 1, memory_order_relaxed);
	if (!r)
		return;
	uint64_t idx = (addr - r->addr) / r->ps, page = r->addr + idx * r->ps;
	if (r->saved[idx]) {
		/* saved and unprotected after the fault was queued: that unprotect woke it; wake
		 * again in case the message outlived the wake-up */
		atomic_fetch_add_explicit(&s->faults_already, 1, memory_order_relaxed);
		uffdwp_wake(s->uffd, page, r->ps);
		return;
	}
	int zero = uffdsnap_is_zero((void *)(uintptr_t)page, r->ps);
	uint64_t need = REC_HDR + (zero ? 0 : r->ps);
	uint8_t *at;
	while (!(at = room(s, need, 1))) {
		if (atomic_load(&s->abort_req))
			return;
		wait_for_output(s, 0);
	}
	struct rec_hdr *h = put_header(s, at, zero ? REC_ZERO : REC_PAGES, ri, idx, 1);
	if (!zero) {
		h->data_crc = copy_crc(at + REC_HDR, (void *)(uintptr_t)page, r->ps, 0);
		s->cur->used += r->ps;
	}
	r->saved[idx] = 1;
	int ret = wp_range(s->uffd, page, r->ps, 0);
	uint64_t t = uffdwp_now_ns() - t_read;
	if (ret < 0)
		set_error(s, ret, UFFDSNAP_PHASE_UNPROTECT);
	atomic_fetch_add_explicit(zero ? &s->zero_pages : &s->data_pages, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->fault_pages, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->pages_saved, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->service_total, t, memory_order_relaxed);
	if (t > atomic_load_explicit(&s->service_max, memory_order_relaxed))
		atomic_store_explicit(&s->service_max, t, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->service_hist[t ? 63 - __builtin_clzll(t) : 0], 1,
				  memory_order_relaxed);
}

/* Read and serve every pending fault message; returns how many were read, or -1 on error. */
static int serve_faults(struct uffdsnap *s)
{
	struct uffd_msg msgs[64];
	int total = 0;
	for (;;) {
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
		for (int i = 0; i < count; i++)
			if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
				serve_fault(s, msgs[i].arg.pagefault.address, t_read);
		total += count;
		if (count < 64)
			return total;
	}
}

/* One chunk of the linear pass: copy what is not saved yet (zero pages as bare records), then
 * unprotect the chunk. Returns 1 if it made progress, 0 if the ring is full, -1 at the end. */
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
	uint8_t *at = room(s, n * (REC_HDR + r->ps), 0);
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
		const void *page = (const void *)(uintptr_t)(r->addr + i * r->ps);
		uint32_t type = uffdsnap_is_zero(page, r->ps) ? REC_ZERO : REC_PAGES;
		if (!run || run_type != type) {
			run = put_header(s, s->cur->buf + s->cur->used, type, ri, i, 0);
			run_type = type;
		}
		run->count++;
		if (type == REC_PAGES) {
			run->data_crc = copy_crc(s->cur->buf + s->cur->used, page, r->ps,
						 run->data_crc);
			s->cur->used += r->ps;
			atomic_fetch_add_explicit(&s->data_pages, 1, memory_order_relaxed);
		} else {
			atomic_fetch_add_explicit(&s->zero_pages, 1, memory_order_relaxed);
		}
		r->saved[i] = 1;
		saved_here++;
	}
	int ret = wp_range(s->uffd, r->addr + first * r->ps, n * r->ps, 0);
	if (ret < 0)
		set_error(s, ret, UFFDSNAP_PHASE_UNPROTECT);
	r->next = first + n;
	atomic_fetch_add_explicit(&s->linear_pages, saved_here, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->pages_saved, saved_here, memory_order_relaxed);
	return 1;
}

/* Remove all protection and wake every writer: the exit of every path. */
static int release_all(struct uffdsnap *s)
{
	int failures = 0;
	for (uint32_t i = 0; i < s->n_regions; i++) {
		int ret = wp_range(s->uffd, s->r[i].addr, s->r[i].len, 0);
		if (ret < 0 && ret != -ENOENT)
			failures++;
		ret = uffdwp_wake(s->uffd, s->r[i].addr, s->r[i].len);
		if (ret < 0 && ret != -ENOENT)
			failures++;
	}
	return failures;
}

static int populate_region(struct snap_region *r)
{
	/* Without UFFD_FEATURE_WP_UNPOPULATED an empty PTE cannot carry the WP bit, so a write to
	 * a never-touched page would not fault and escape the image. Read-populate maps the zero
	 * page (anon) or the page cache page, which protection then covers (QEMU does the same). */
	if (madvise((void *)(uintptr_t)r->addr, r->len, MADV_POPULATE_READ) == 0)
		return 0;
	if (errno != EINVAL)
		return -errno;
	for (uint64_t i = 0; i < r->pages; i++) /* before 5.14: touch every page */
		(void)*(volatile uint8_t *)(uintptr_t)(r->addr + i * r->ps);
	return 0;
}

static void *output_main(void *arg);

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

static void *engine_main(void *arg)
{
	struct uffdsnap *s = arg;
	apply_priority(s);
	atomic_store(&s->t_start, uffdwp_now_ns());

	if (s->populate) {
		uint64_t t0 = uffdwp_now_ns();
		for (uint32_t i = 0; i < s->n_regions; i++) {
			int ret = populate_region(&s->r[i]);
			if (ret < 0) {
				set_error(s, ret, UFFDSNAP_PHASE_POPULATE);
				break;
			}
		}
		atomic_store(&s->populate_ns, uffdwp_now_ns() - t0);
	}
	/* Freeze: protect every region before serving any fault, so no writer that faulted on
	 * one region is released before the last region is protected: a consistent cut. */
	uint64_t t0 = uffdwp_now_ns(), t1 = t0;
	if (s->protect && !atomic_load(&s->abort_req)) {
		for (uint32_t i = 0; i < s->n_regions; i++) {
			int ret = wp_range(s->uffd, s->r[i].addr, s->r[i].len, 1);
			if (ret < 0) {
				set_error(s, ret, UFFDSNAP_PHASE_PROTECT);
				break;
			}
		}
		t1 = uffdwp_now_ns();
	}
	/* one pair of readings: [t0, t1] brackets the protect ioctls exactly */
	atomic_store(&s->t_protect, t0);
	atomic_store(&s->protect_ns, t1 - t0);
	atomic_store(&s->t_frozen, t1);

	while (!atomic_load(&s->abort_req)) {
		int served = serve_faults(s);
		if (served < 0 || atomic_load(&s->abort_req))
			break;
		int step = linear_step(s);
		if (step < 0)
			break;
		if (step == 0 && served == 0)
			wait_for_output(s, 1); /* ring full: sleep until room or a fault */
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
		seal_header(h, chain);
		off += REC_HDR + data;
	}
}

static void *output_main(void *arg)
{
	struct uffdsnap *s = arg;
	uint32_t chain = 0;
	uint64_t pages = 0;
	block_sigpipe();
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
			seal_header(&h, NULL);
			int ret = write_full(s->out_fd, &h, REC_HDR,
					     s->out_nonblock ? s->output_evfd : -1);
			if (ret < 0) {
				drop_pending_sigpipe();
				set_error(s, ret, UFFDSNAP_PHASE_OUTPUT);
			} else {
				atomic_fetch_add(&s->bytes_written, REC_HDR);
				atomic_store(&s->chain_crc, chain);
			}
			(void)pages;
			break;
		}
		if (!sl->raw)
			seal_slot(s, sl, &chain);
		int ret = write_full(s->out_fd, sl->buf, sl->used,
				     s->out_nonblock ? s->output_evfd : -1);
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
	s->out_fd = cfg->out_fd;
	s->out_nonblock = cfg->out_nonblock;
	s->populate = cfg->populate;
	s->protect = cfg->protect;
	s->priority = cfg->engine_priority;
	s->n_regions = cfg->n_regions;
	s->chunk_bytes = cfg->chunk_bytes ? cfg->chunk_bytes : 128 * 1024;
	s->n_slots = cfg->n_slots >= 2 ? cfg->n_slots : 32;
	s->reserve = cfg->reserve_slots < s->n_slots ? cfg->reserve_slots : s->n_slots / 4;
	if (s->engine_evfd < 0 || s->output_evfd < 0 || !cfg->n_regions) {
		*err = cfg->n_regions ? -errno : -EINVAL;
		goto fail;
	}
	s->r = calloc(cfg->n_regions, sizeof(*s->r));
	if (!s->r)
		goto nomem;
	uint64_t need = cfg->prefix_len;
	for (uint32_t i = 0; i < cfg->n_regions; i++) {
		const struct uffdsnap_region *in = &cfg->regions[i];
		struct snap_region *r = &s->r[i];
		if (!in->page_size || in->page_size % 8 || in->length % in->page_size ||
		    !in->length) {
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
	/* userfaultfd's poll() answers POLLERR on a blocking fd: the engine needs O_NONBLOCK. */
	int fl = fcntl(s->uffd, F_GETFL);
	if (fl < 0 || fcntl(s->uffd, F_SETFL, fl | O_NONBLOCK) < 0) {
		*err = -errno;
		goto fail;
	}
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

/* ----------------------------------------------------------------------------------------------
 * helpers for baselines and tests
 */
int64_t uffdsnap_write_all(int fd, uint64_t addr, uint64_t len, uint64_t chunk)
{
	block_sigpipe();
	if (!chunk)
		chunk = 1 << 20;
	for (uint64_t off = 0; off < len; off += chunk) {
		uint64_t n = len - off < chunk ? len - off : chunk;
		int ret = write_full(fd, (const void *)(uintptr_t)(addr + off), n, -1);
		if (ret < 0) {
			drop_pending_sigpipe();
			return ret;
		}
	}
	return (int64_t)len;
}

int64_t uffdsnap_write_pages(int fd, uint32_t region, uint64_t base, uint64_t page_size,
			     const uint64_t *indices, uint64_t n, uint32_t *chain,
			     uint64_t *records)
{
	const uint64_t cap = 4u << 20;
	uint8_t *buf = malloc(cap + REC_HDR + page_size);
	if (!buf)
		return -ENOMEM;
	block_sigpipe();
	uint64_t used = 0, total = 0, count = 0;
	struct rec_hdr *run = NULL;
	uint64_t run_end = 0;
	int64_t ret = 0;
	for (uint64_t k = 0; k < n; k++) {
		uint64_t i = indices[k];
		const void *page = (const void *)(uintptr_t)(base + i * page_size);
		uint32_t type = uffdsnap_is_zero(page, page_size) ? REC_ZERO : REC_PAGES;
		if (used + REC_HDR + page_size > cap) { /* flush */
			if (run)
				seal_header(run, chain);
			run = NULL;
			int w = write_full(fd, buf, used, -1);
			if (w < 0) {
				ret = w;
				goto out;
			}
			total += used;
			used = 0;
		}
		if (!run || run->type != type || run_end != i) {
			if (run)
				seal_header(run, chain);
			run = (struct rec_hdr *)(buf + used);
			memset(run, 0, REC_HDR);
			run->type = type;
			run->region = region;
			run->first = i;
			used += REC_HDR;
			count++;
		}
		if (type == REC_PAGES) {
			memcpy(buf + used, page, page_size);
			run->data_crc = uffdsnap_crc32c(run->data_crc, buf + used, page_size);
			used += page_size;
		}
		run->count++;
		run_end = i + 1;
	}
	if (run)
		seal_header(run, chain);
	if (used) {
		int w = write_full(fd, buf, used, -1);
		if (w < 0) {
			ret = w;
			goto out;
		}
		total += used;
	}
	ret = (int64_t)total;
out:
	if (ret < 0)
		drop_pending_sigpipe();
	if (records)
		*records += count;
	free(buf);
	return ret;
}

int64_t uffdsnap_write_end(int fd, uint64_t pages, uint64_t records, uint32_t chain)
{
	struct rec_hdr h = { .type = REC_END, .region = 0xffffffffu, .first = pages,
			     .count = (uint32_t)records, .data_crc = chain };
	seal_header(&h, NULL);
	int ret = write_full(fd, &h, REC_HDR, -1);
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

/* ----------------------------------------------------------------------------------------------
 * causal chain writers
 */
struct chain_thread {
	pthread_t thread;
	struct uffdsnap_chain *c;
	uint32_t index;
	int started;
};

struct uffdsnap_chain {
	uint64_t *addrs;
	uint32_t n_addrs, n_threads;
	uint64_t max_steps;
	_Atomic uint64_t step;
	_Atomic int stop;
	_Atomic uint32_t running;
	struct chain_thread *threads;
};

static void *chain_main(void *arg)
{
	struct chain_thread *t = arg;
	struct uffdsnap_chain *c = t->c;
	for (;;) {
		uint64_t i = atomic_load_explicit(&c->step, memory_order_acquire);
		if (atomic_load_explicit(&c->stop, memory_order_relaxed) ||
		    (c->max_steps && i >= c->max_steps))
			break;
		if (i % c->n_threads != t->index) {
			sched_yield(); /* the other thread's turn: it may be blocked in a fault */
			continue;
		}
		*(volatile uint64_t *)(uintptr_t)c->addrs[i % c->n_addrs] = i + 1;
		atomic_store_explicit(&c->step, i + 1, memory_order_release);
	}
	atomic_fetch_sub(&c->running, 1);
	return NULL;
}

struct uffdsnap_chain *uffdsnap_chain_start(const uint64_t *addrs, uint32_t n_addrs,
					    uint32_t n_threads, uint64_t max_steps, int *err)
{
	if (!n_addrs || !n_threads) {
		*err = -EINVAL;
		return NULL;
	}
	struct uffdsnap_chain *c = calloc(1, sizeof(*c));
	if (!c) {
		*err = -ENOMEM;
		return NULL;
	}
	c->addrs = malloc(n_addrs * sizeof(uint64_t));
	c->threads = calloc(n_threads, sizeof(*c->threads));
	if (!c->addrs || !c->threads) {
		free(c->addrs);
		free(c->threads);
		free(c);
		*err = -ENOMEM;
		return NULL;
	}
	memcpy(c->addrs, addrs, n_addrs * sizeof(uint64_t));
	c->n_addrs = n_addrs;
	c->n_threads = n_threads;
	c->max_steps = max_steps;
	for (uint32_t i = 0; i < n_threads; i++) {
		c->threads[i].c = c;
		c->threads[i].index = i;
		atomic_fetch_add(&c->running, 1);
		int ret = pthread_create(&c->threads[i].thread, NULL, chain_main, &c->threads[i]);
		if (ret) {
			atomic_fetch_sub(&c->running, 1);
			atomic_store(&c->stop, 1);
			uffdsnap_chain_stop(c, 10000);
			uffdsnap_chain_free(c);
			*err = -ret;
			return NULL;
		}
		c->threads[i].started = 1;
	}
	*err = 0;
	return c;
}

uint64_t uffdsnap_chain_steps(struct uffdsnap_chain *c)
{
	return atomic_load(&c->step);
}

int uffdsnap_chain_stop(struct uffdsnap_chain *c, int timeout_ms)
{
	atomic_store(&c->stop, 1);
	uint64_t deadline = uffdwp_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	while (atomic_load(&c->running)) {
		if (uffdwp_now_ns() > deadline)
			return -ETIMEDOUT;
		usleep(1000);
	}
	for (uint32_t i = 0; i < c->n_threads; i++)
		if (c->threads[i].started) {
			pthread_join(c->threads[i].thread, NULL);
			c->threads[i].started = 0;
		}
	return 0;
}

void uffdsnap_chain_free(struct uffdsnap_chain *c)
{
	if (uffdsnap_chain_stop(c, 60000) < 0)
		return; /* threads still blocked: leak rather than free memory they use */
	free(c->addrs);
	free(c->threads);
	free(c);
}
