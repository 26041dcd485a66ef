// SPDX-License-Identifier: GPL-2.0-only
/* Native part of uffdwp. See uffdwp_native.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "uffd_compat.h"
#include "uffdwp_native.h"
#include "uffdwp_internal.h"
#include "memguard_native.h"

/* ----------------------------------------------------------------------------------------------
 * wrappers
 */
int uffdwp_open_syscall(int flags)
{
#ifdef __NR_userfaultfd
	long fd = syscall(__NR_userfaultfd, flags);
	return fd < 0 ? -errno : (int)fd;
#else
	(void)flags;
	return -ENOSYS;
#endif
}

int uffdwp_open_dev(const char *path, int flags)
{
	int dev = open(path, O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -errno;
	int fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
	int saved = errno;
	close(dev);
	return fd < 0 ? -saved : fd;
}

int uffdwp_ioctl(int fd, unsigned long request, void *arg)
{
	int ret = ioctl(fd, request, arg);
	return ret < 0 ? -errno : ret;
}

int uffdwp_read_msgs(int fd, void *buf, size_t max_msgs)
{
	ssize_t n = read(fd, buf, max_msgs * sizeof(struct uffd_msg));
	if (n < 0)
		return -errno;
	return (int)(n / (ssize_t)sizeof(struct uffd_msg));
}

int uffdwp_poll_in(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int ret = poll(&p, 1, timeout_ms);
	if (ret < 0)
		return -errno;
	return ret == 0 ? 0 : p.revents;
}

int uffdwp_close(int fd)
{
	return close(fd) < 0 ? -errno : 0;
}

int uffdwp_store_u64(uint64_t addr, uint64_t value)
{
	struct memguard g;
	int ret = memguard_take(&g);
	if (ret < 0)
		return ret;
	if (sigsetjmp(g.jb, 0)) {
		memguard_release(&g);
		return -EFAULT;
	}
	memguard_arm(&g, addr, addr + sizeof(value));
	*(volatile uint64_t *)(uintptr_t)addr = value;
	memguard_release(&g);
	return 0;
}

int uffdwp_load_u64(uint64_t addr, uint64_t *value)
{
	struct memguard g;
	int ret = memguard_take(&g);
	if (ret < 0)
		return ret;
	if (sigsetjmp(g.jb, 0)) {
		memguard_release(&g);
		return -EFAULT;
	}
	memguard_arm(&g, addr, addr + sizeof(*value));
	*value = *(volatile uint64_t *)(uintptr_t)addr;
	memguard_release(&g);
	return 0;
}

uint64_t uffdwp_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ----------------------------------------------------------------------------------------------
 * fault-servicing thread
 */
struct uffdwp_handler {
	pthread_t thread;
	int uffd;
	int uffd_flags; /* the caller's file status flags, given back on stop */
	int stop_fd;
	int policy;
	uint64_t page_size;
	uint64_t *ranges; /* start, len pairs */
	size_t n_ranges;
	uint64_t copy_to;
	struct uffdwp_record *records;
	size_t record_capacity;
	_Atomic size_t n_records; /* records written in full (release): a reader sees them whole */
	_Atomic uint64_t messages, wp_faults, missing_faults, minor_faults, events, resolved,
		errors, dropped, gave_up;
	uint64_t refault_page; /* the last WP fault's page, and how often in a row it came back */
	uint64_t refaults;
	_Atomic int running;
	_Atomic int last_error;
};

int uffdwp_writeprotect(int uffd, uint64_t start, uint64_t len, uint64_t mode)
{
	struct uffdio_writeprotect wp = { .range = { .start = start, .len = len }, .mode = mode };
	int ret;
	do
		ret = uffdwp_ioctl(uffd, UFFDIO_WRITEPROTECT, &wp);
	while (ret == -EINTR);
	return ret;
}

/* Read and drop every pending message: the thread behind an event goes on, a fork's new uffd
 * is closed (which unregisters the child), faulting threads are woken by the caller later.
 * Returns how many were read. */
static int drop_messages(int uffd)
{
	struct uffd_msg msgs[64];
	int total = 0;
	for (;;) {
		ssize_t n = read(uffd, msgs, sizeof(msgs));
		if (n <= 0)
			return total;
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(struct uffd_msg); i++)
			if (msgs[i].event == UFFD_EVENT_FORK)
				close((int)msgs[i].arg.fork.ufd);
		total += (int)(n / (ssize_t)sizeof(struct uffd_msg));
	}
}

int uffdwp_writeprotect_settle(int uffd, uint64_t start, uint64_t len, uint64_t mode)
{
	uint64_t deadline = uffdwp_now_ns() + 10ull * 1000000000ull;
	for (;;) {
		int ret = uffdwp_writeprotect_mapped(uffd, start, len, mode, uffdwp_writeprotect);
		if (ret != -EAGAIN || uffdwp_now_ns() > deadline)
			return ret;
		/* an event holds the mm: nobody else reads this uffd any more, so read it here */
		if (!drop_messages(uffd))
			usleep(100); /* read already; its thread has yet to go on */
	}
}

int uffdwp_event_pending(int uffd)
{
	/* The kernel tests mmap_changing before it even reads the argument: a zero-length range
	 * answers EAGAIN while an event is pending and EINVAL otherwise, and changes nothing. */
	struct uffdio_writeprotect wp = { .range = { .start = 0, .len = 0 }, .mode = 0 };
	return uffdwp_ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) == -EAGAIN;
}

int uffdwp_writeprotect_mapped(int uffd, uint64_t start, uint64_t len, uint64_t mode,
			       int (*wp)(int, uint64_t, uint64_t, uint64_t))
{
	int ret = wp(uffd, start, len, mode);
	if (ret != -ENOENT && ret != -EINVAL)
		return ret;
	/* On older kernels (6.1 among them) one call covers one VMA only: a range the caller split
	 * (mprotect) or punched (munmap) spans several or has holes: go VMA by VMA over what is
	 * mapped. */
	FILE *maps = fopen("/proc/self/maps", "re");
	if (!maps)
		return ret;
	char line[512];
	int first_error = 0, done = 0;
	uint64_t end = start + len;
	while (fgets(line, sizeof(line), maps)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx", &lo, &hi) != 2 || hi <= start || lo >= end)
			continue;
		uint64_t a = lo > start ? lo : start, b = hi < end ? hi : end;
		int r = wp(uffd, a, b - a, mode);
		if (r == 0)
			done++;
		else if (r != -ENOENT && !first_error)
			first_error = r; /* ENOENT: a piece not registered (or no longer ours) */
	}
	fclose(maps);
	if (first_error)
		return first_error;
	return done ? 0 : -ENOENT;
}

int uffdwp_wake(int uffd, uint64_t start, uint64_t len)
{
	struct uffdio_range r = { .start = start, .len = len };
	return uffdwp_ioctl(uffd, UFFDIO_WAKE, &r);
}

struct timespec uffdwp_deadline(int timeout_ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)(timeout_ms % 1000) * 1000000ull;
	ts.tv_sec += timeout_ms / 1000 + (time_t)(ns / 1000000000ull);
	ts.tv_nsec = (long)(ns % 1000000000ull);
	return ts;
}

/* The range the handler was given that holds addr, so a copy lands at the same offset. */
static uint64_t copy_offset(struct uffdwp_handler *h, uint64_t page, int *found)
{
	uint64_t base = 0;
	for (size_t i = 0; i < h->n_ranges; i++) {
		uint64_t start = h->ranges[2 * i], len = h->ranges[2 * i + 1];
		if (page >= start && page < start + len) {
			*found = 1;
			return base + (page - start);
		}
		base += len;
	}
	*found = 0;
	return 0;
}

static int resolve_fault(struct uffdwp_handler *h, const struct uffd_msg *msg)
{
	uint64_t flags = msg->arg.pagefault.flags;
	uint64_t page = msg->arg.pagefault.address & ~(h->page_size - 1);

	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		atomic_fetch_add(&h->wp_faults, 1);
		if (h->policy == UFFDWP_POLICY_RECORD)
			return 1;
		/* A page that faults again and again right after being unprotected: the kernel
		 * does not keep the unprotect. Resolving it for ever would spin this thread and
		 * the writer; give up on it, and say so (gave_up, -ELOOP). */
		if (page == h->refault_page && ++h->refaults >= UFFDWP_MAX_REFAULTS) {
			if (h->refaults == UFFDWP_MAX_REFAULTS)
				atomic_fetch_add(&h->gave_up, 1);
			return -ELOOP;
		}
		if (page != h->refault_page) {
			h->refault_page = page;
			h->refaults = 0;
		}
		if (h->policy == UFFDWP_POLICY_COPY_UNPROTECT && h->copy_to) {
			int found;
			uint64_t off = copy_offset(h, page, &found);
			if (found && uffdwp_guarded_copy(h->copy_to + off, page, h->page_size) < 0)
				return -EFAULT; /* left protected: stop() lifts it and wakes the writer */
		}
		return uffdwp_writeprotect(h->uffd, page, h->page_size, 0); /* EAGAIN: retried */
	}
	if (flags & UFFD_PAGEFAULT_FLAG_MINOR) {
		atomic_fetch_add(&h->minor_faults, 1);
		if (h->policy == UFFDWP_POLICY_RECORD)
			return 1;
		struct uffdio_continue c = { .range = { .start = page, .len = h->page_size } };
		int ret = uffdwp_ioctl(h->uffd, UFFDIO_CONTINUE, &c);
		return ret == -EEXIST ? 0 : ret;
	}
	atomic_fetch_add(&h->missing_faults, 1);
	if (h->policy == UFFDWP_POLICY_RECORD)
		return 1;
	struct uffdio_zeropage z = { .range = { .start = page, .len = h->page_size } };
	int ret = uffdwp_ioctl(h->uffd, UFFDIO_ZEROPAGE, &z);
	if (ret == -EINVAL) { /* hugetlb has no ZEROPAGE: copy a zeroed huge page */
		void *zero = calloc(1, h->page_size);
		if (!zero)
			return -ENOMEM;
		struct uffdio_copy cp = { .dst = page, .src = (uint64_t)(uintptr_t)zero,
					  .len = h->page_size };
		ret = uffdwp_ioctl(h->uffd, UFFDIO_COPY, &cp);
		free(zero);
	}
	return ret == -EEXIST ? 0 : ret;
}

/* Only the handler thread writes records: fill one in, then publish it. */
static void record(struct uffdwp_handler *h, const struct uffd_msg *msg, uint64_t t_read,
		   int result)
{
	size_t i = atomic_load_explicit(&h->n_records, memory_order_relaxed);
	if (i >= h->record_capacity) {
		atomic_fetch_add(&h->dropped, 1);
		return;
	}
	struct uffdwp_record *r = &h->records[i];
	memset(r, 0, sizeof(*r));
	r->t_read_ns = t_read;
	r->event = msg->event;
	switch (msg->event) {
	case UFFD_EVENT_PAGEFAULT:
		r->address = msg->arg.pagefault.address;
		r->flags = (uint32_t)msg->arg.pagefault.flags;
		r->tid = msg->arg.pagefault.feat.ptid;
		r->t_done_ns = result == 0 ? uffdwp_now_ns() : 0;
		r->error = result < 0 ? result : 0;
		break;
	case UFFD_EVENT_FORK:
		r->address = msg->arg.fork.ufd;
		break;
	case UFFD_EVENT_REMAP:
		r->address = msg->arg.remap.from;
		r->arg2 = msg->arg.remap.to;
		r->arg3 = msg->arg.remap.len;
		break;
	case UFFD_EVENT_REMOVE:
	case UFFD_EVENT_UNMAP:
		r->address = msg->arg.remove.start;
		r->arg2 = msg->arg.remove.end;
		break;
	}
	atomic_store_explicit(&h->n_records, i + 1, memory_order_release);
}

static void count_result(struct uffdwp_handler *h, int result)
{
	if (result == 0)
		atomic_fetch_add(&h->resolved, 1);
	else if (result < 0) {
		atomic_fetch_add(&h->errors, 1);
		atomic_store(&h->last_error, result);
	}
}

static void finish(struct uffdwp_handler *h, const struct uffd_msg *msg, uint64_t t_read,
		   int result)
{
	record(h, msg, t_read, result);
	/* counted after its record: wait_for(n) then records() sees n whole records */
	atomic_fetch_add_explicit(&h->messages, 1, memory_order_release);
}

/* A WP fault whose unprotect the kernel refused with EAGAIN (an event is pending: the mm is
 * changing) waits here until the handler has read that event, then is tried again. */
#define MAX_DEFERRED 256
struct deferred {
	struct uffd_msg msg;
	uint64_t t_read;
};

static void *handler_main(void *arg)
{
	struct uffdwp_handler *h = arg;
	struct uffd_msg msgs[64];
	struct deferred later[MAX_DEFERRED];
	int n_later = 0;

	for (;;) {
		struct pollfd p[2] = { { .fd = h->uffd, .events = POLLIN },
				       { .fd = h->stop_fd, .events = POLLIN } };
		if (poll(p, 2, n_later ? 1 : -1) < 0) {
			if (errno == EINTR)
				continue;
			atomic_store(&h->last_error, -errno);
			break;
		}
		if (p[1].revents)
			break;
		if (p[0].revents & (POLLERR | POLLNVAL)) {
			atomic_store(&h->last_error, -EBADF);
			break;
		}
		ssize_t n = p[0].revents ? read(h->uffd, msgs, sizeof(msgs)) : 0;
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR) {
				atomic_store(&h->last_error, -errno);
				break;
			}
			n = 0;
		}
		uint64_t t_read = uffdwp_now_ns();
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(struct uffd_msg); i++) {
			int result = 1;
			if (msgs[i].event == UFFD_EVENT_PAGEFAULT) {
				result = resolve_fault(h, &msgs[i]);
				if (result == -EAGAIN && n_later < MAX_DEFERRED &&
				    msgs[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
					later[n_later++] = (struct deferred){ msgs[i], t_read };
					continue;
				}
				count_result(h, result);
			} else {
				atomic_fetch_add(&h->events, 1);
			}
			finish(h, &msgs[i], t_read, result);
		}
		int kept = 0;
		for (int k = 0; k < n_later; k++) {
			int result = uffdwp_writeprotect(h->uffd, later[k].msg.arg.pagefault.address &
							 ~(h->page_size - 1), h->page_size, 0);
			if (result == -EAGAIN) {
				later[kept++] = later[k];
				continue;
			}
			count_result(h, result);
			finish(h, &later[k].msg, later[k].t_read, result);
		}
		n_later = kept;
	}
	atomic_store(&h->running, 0);
	return NULL;
}

struct uffdwp_handler *uffdwp_handler_start(int uffd, int policy, uint64_t page_size,
					    const uint64_t *ranges, size_t n_ranges,
					    uint64_t copy_to, size_t record_capacity, int *err)
{
	struct uffdwp_handler *h = calloc(1, sizeof(*h));
	if (!h) {
		*err = -ENOMEM;
		return NULL;
	}
	h->uffd = uffd;
	h->refault_page = UINT64_MAX;
	h->policy = policy;
	h->page_size = page_size;
	h->copy_to = copy_to;
	h->n_ranges = n_ranges;
	h->record_capacity = record_capacity;
	h->ranges = calloc(n_ranges ? 2 * n_ranges : 1, sizeof(uint64_t));
	h->records = calloc(record_capacity ? record_capacity : 1, sizeof(struct uffdwp_record));
	h->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (uffd < 0 || fcntl(uffd, F_GETFD) < 0) {
		*err = -EBADF;
		goto fail;
	}
	if (!h->ranges || !h->records || h->stop_fd < 0) {
		*err = h->stop_fd < 0 ? -errno : -ENOMEM;
		goto fail;
	}
	if (n_ranges)
		memcpy(h->ranges, ranges, 2 * n_ranges * sizeof(uint64_t));
	/* userfaultfd's poll() answers POLLERR on a blocking fd: the handler needs O_NONBLOCK
	 * (the caller's setting comes back on stop). */
	h->uffd_flags = fcntl(uffd, F_GETFL);
	if (h->uffd_flags < 0 || fcntl(uffd, F_SETFL, h->uffd_flags | O_NONBLOCK) < 0) {
		*err = -errno;
		goto fail;
	}
	atomic_store(&h->running, 1);
	int ret = pthread_create(&h->thread, NULL, handler_main, h);
	if (ret) {
		fcntl(uffd, F_SETFL, h->uffd_flags);
		*err = -ret;
		goto fail;
	}
	*err = 0;
	return h;
fail:
	if (h->stop_fd >= 0)
		close(h->stop_fd);
	free(h->ranges);
	free(h->records);
	free(h);
	return NULL;
}

void uffdwp_handler_get_stats(struct uffdwp_handler *h, struct uffdwp_handler_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!h)
		return;
	out->messages = atomic_load(&h->messages);
	out->wp_faults = atomic_load(&h->wp_faults);
	out->missing_faults = atomic_load(&h->missing_faults);
	out->minor_faults = atomic_load(&h->minor_faults);
	out->events = atomic_load(&h->events);
	out->resolved = atomic_load(&h->resolved);
	out->errors = atomic_load(&h->errors);
	out->dropped_records = atomic_load(&h->dropped);
	out->gave_up = atomic_load(&h->gave_up);
	out->running = atomic_load(&h->running);
	out->last_error = atomic_load(&h->last_error);
}

size_t uffdwp_handler_records(struct uffdwp_handler *h, struct uffdwp_record *out, size_t max)
{
	if (!h)
		return 0;
	size_t n = atomic_load_explicit(&h->n_records, memory_order_acquire);
	if (n > h->record_capacity)
		n = h->record_capacity;
	if (n > max)
		n = max;
	memcpy(out, h->records, n * sizeof(*out));
	return n;
}

int uffdwp_handler_stop(struct uffdwp_handler *h)
{
	uint64_t one = 1;
	int failures = 0;
	if (!h)
		return 0;
	if (write(h->stop_fd, &one, sizeof(one)) != sizeof(one))
		failures++;
	pthread_join(h->thread, NULL);
	/* Leave nothing blocked: lift protection, then wake whoever still waits in a fault. */
	for (size_t i = 0; i < h->n_ranges; i++) {
		uint64_t start = h->ranges[2 * i], len = h->ranges[2 * i + 1];
		int ret = uffdwp_writeprotect_settle(h->uffd, start, len, 0);
		if (ret < 0 && ret != -ENOENT && ret != -EINVAL)
			failures++;
		ret = uffdwp_wake(h->uffd, start, len);
		if (ret < 0 && ret != -ENOENT && ret != -EINVAL)
			failures++;
	}
	if (fcntl(h->uffd, F_SETFL, h->uffd_flags) < 0 && errno != EBADF)
		failures++;
	close(h->stop_fd);
	free(h->ranges);
	free(h->records);
	free(h);
	return -failures;
}

/* ----------------------------------------------------------------------------------------------
 * writer thread
 */
struct uffdwp_writer {
	pthread_t thread;
	uint64_t addr, len, page_size, offset_in_page, rate, max_writes, seed, value_base;
	int pattern;
	struct uffdwp_write_record *records;
	size_t record_capacity;
	_Atomic int stop;
	_Atomic int running;
	_Atomic int error;
	_Atomic int throttle_pct; /* 0..99: percent of each time slice spent asleep (below) */
	/* stores done and logged: its record is whole before the count covers it (release) */
	_Atomic uint64_t writes, max_stall, total_stall, t_start, t_end, dropped;
	_Atomic uint64_t histogram[64];
	pthread_mutex_t lock;
	pthread_cond_t done;
};

static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static uint64_t next_page(struct uffdwp_writer *w, uint64_t i, uint64_t *rng)
{
	uint64_t pages = w->len / w->page_size;
	switch (w->pattern) {
	case UFFDWP_PATTERN_RANDOM:
		return xorshift64(rng) % pages;
	case UFFDWP_PATTERN_HOTSPOT: {
		uint64_t hot = pages / 10 ? pages / 10 : 1;
		return xorshift64(rng) % 10 ? xorshift64(rng) % hot : xorshift64(rng) % pages;
	}
	default:
		return i % pages;
	}
}

static void sleep_until(uint64_t t_ns)
{
	struct timespec ts = { .tv_sec = (time_t)(t_ns / 1000000000ull),
			       .tv_nsec = (long)(t_ns % 1000000000ull) };
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* As QEMU's cpu_throttle_thread (migration/cpu-throttle.c): run a 10 ms slice, then sleep
 * pct/(100-pct) of it, which leaves the thread (100-pct)% of the time. */
#define THROTTLE_SLICE_NS 10000000ull

static void *writer_main(void *arg)
{
	struct uffdwp_writer *w = arg;
	uint64_t rng = w->seed ? w->seed : 0x9e3779b97f4a7c15ull;
	uint64_t t0 = uffdwp_now_ns();
	uint64_t interval = w->rate ? 1000000000ull / w->rate : 0;
	uint64_t slice_start = t0;
	struct memguard g;
	atomic_store(&w->t_start, t0);

	int ret = memguard_take(&g);
	if (ret < 0) {
		atomic_store(&w->error, ret);
		goto out;
	}
	/* The caller may unmap the range under us: that ends the writer with -EFAULT. */
	if (sigsetjmp(g.jb, 0)) {
		atomic_store(&w->error, -EFAULT);
		goto out;
	}
	memguard_arm(&g, w->addr, w->addr + w->len);
	for (uint64_t i = 0; !atomic_load_explicit(&w->stop, memory_order_relaxed) &&
			     (w->max_writes == 0 || i < w->max_writes);
	     i++) {
		if (interval)
			sleep_until(t0 + i * interval);
		uint64_t target = w->addr + next_page(w, i, &rng) * w->page_size + w->offset_in_page;
		uint64_t value = w->value_base + i;
		uint64_t start = uffdwp_now_ns();
		*(volatile uint64_t *)(uintptr_t)target = value;
		uint64_t stall = uffdwp_now_ns() - start;

		atomic_fetch_add_explicit(&w->total_stall, stall, memory_order_relaxed);
		if (stall > atomic_load_explicit(&w->max_stall, memory_order_relaxed))
			atomic_store_explicit(&w->max_stall, stall, memory_order_relaxed);
		int bucket = stall ? 63 - __builtin_clzll(stall) : 0;
		atomic_fetch_add_explicit(&w->histogram[bucket], 1, memory_order_relaxed);
		if (i < w->record_capacity) {
			struct uffdwp_write_record *r = &w->records[i];
			r->t_start_ns = start;
			r->stall_ns = stall;
			r->address = target;
			r->value = value;
		} else {
			atomic_fetch_add_explicit(&w->dropped, 1, memory_order_relaxed);
		}
		atomic_store_explicit(&w->writes, i + 1, memory_order_release);
		int pct = atomic_load_explicit(&w->throttle_pct, memory_order_relaxed);
		if (!pct) {
			slice_start = start;
		} else if (start - slice_start >= THROTTLE_SLICE_NS) {
			uint64_t nap = THROTTLE_SLICE_NS * (uint64_t)pct / (uint64_t)(100 - pct);
			sleep_until(start + nap);
			t0 += nap; /* a paced writer loses the time asleep instead of catching up */
			slice_start = start + nap;
		}
	}
out:
	memguard_release(&g);
	atomic_store(&w->t_end, uffdwp_now_ns());
	pthread_mutex_lock(&w->lock);
	atomic_store(&w->running, 0);
	pthread_cond_broadcast(&w->done);
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

struct uffdwp_writer *uffdwp_writer_start(uint64_t addr, uint64_t len, uint64_t page_size,
					  uint64_t offset_in_page, int pattern,
					  uint64_t writes_per_second, uint64_t max_writes,
					  uint64_t seed, uint64_t value_base,
					  size_t record_capacity, int *err)
{
	if (!page_size || len < page_size || offset_in_page + 8 > page_size ||
	    offset_in_page % 8 || addr + len < addr || pattern < 0 || pattern > 2) {
		*err = -EINVAL;
		return NULL;
	}
	struct uffdwp_writer *w = calloc(1, sizeof(*w));
	if (!w) {
		*err = -ENOMEM;
		return NULL;
	}
	w->addr = addr;
	w->len = len;
	w->page_size = page_size;
	w->offset_in_page = offset_in_page;
	w->pattern = pattern;
	w->rate = writes_per_second;
	w->max_writes = max_writes;
	w->seed = seed;
	w->value_base = value_base;
	w->record_capacity = record_capacity;
	w->records = calloc(record_capacity ? record_capacity : 1, sizeof(*w->records));
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->done, NULL);
	if (!w->records) {
		*err = -ENOMEM;
		free(w);
		return NULL;
	}
	atomic_store(&w->running, 1);
	int ret = pthread_create(&w->thread, NULL, writer_main, w);
	if (ret) {
		*err = -ret;
		free(w->records);
		free(w);
		return NULL;
	}
	*err = 0;
	return w;
}

void uffdwp_writer_get_stats(struct uffdwp_writer *w, struct uffdwp_writer_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!w)
		return;
	out->error = atomic_load(&w->error);
	out->writes = atomic_load(&w->writes);
	out->max_stall_ns = atomic_load(&w->max_stall);
	out->total_stall_ns = atomic_load(&w->total_stall);
	out->t_start_ns = atomic_load(&w->t_start);
	out->t_end_ns = atomic_load(&w->t_end);
	out->dropped_records = atomic_load(&w->dropped);
	out->running = atomic_load(&w->running);
	for (int i = 0; i < 64; i++)
		out->histogram[i] = atomic_load(&w->histogram[i]);
}

size_t uffdwp_writer_records(struct uffdwp_writer *w, struct uffdwp_write_record *out, size_t max)
{
	if (!w)
		return 0;
	size_t n = atomic_load_explicit(&w->writes, memory_order_acquire);
	if (n > w->record_capacity)
		n = w->record_capacity;
	if (n > max)
		n = max;
	memcpy(out, w->records, n * sizeof(*out));
	return n;
}

int uffdwp_writer_wait(struct uffdwp_writer *w, int timeout_ms)
{
	if (!w)
		return 0;
	struct timespec ts = uffdwp_deadline(timeout_ms);
	int ret = 0;
	pthread_mutex_lock(&w->lock);
	while (atomic_load(&w->running) && ret == 0)
		ret = pthread_cond_timedwait(&w->done, &w->lock, &ts);
	int running = atomic_load(&w->running);
	pthread_mutex_unlock(&w->lock);
	return running ? -ETIMEDOUT : 0;
}

void uffdwp_writer_set_throttle(struct uffdwp_writer *w, int pct)
{
	if (w)
		atomic_store(&w->throttle_pct, pct < 0 ? 0 : pct > 99 ? 99 : pct);
}

void uffdwp_writer_request_stop(struct uffdwp_writer *w)
{
	if (w)
		atomic_store(&w->stop, 1);
}

void uffdwp_writer_free(struct uffdwp_writer *w)
{
	if (!w)
		return;
	atomic_store(&w->stop, 1);
	pthread_join(w->thread, NULL);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->done);
	free(w->records);
	free(w);
}
