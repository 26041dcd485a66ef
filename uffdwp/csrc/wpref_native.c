// SPDX-License-Identifier: GPL-2.0-only
/* The minimal UFFD-WP round trip the native handler is measured against (wpref_native.h).
 * Deliberately self-contained: its own clock, ioctls and threads, nothing from uffdwp. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "uffd_compat.h"
#include "wpref_native.h"

struct ref {
	int uffd;
	uint8_t *mem;
	uint64_t pages, page_size;
	uint64_t *stalls;
	atomic_int writer_done;
	atomic_int error;
};

static uint64_t ref_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int ref_wp(int uffd, uint64_t start, uint64_t len, uint64_t mode)
{
	struct uffdio_writeprotect wp = { .range = { .start = start, .len = len }, .mode = mode };
	while (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

/* poll + read + UFFDIO_WRITEPROTECT: the whole handler. The poll timeout only lets it notice
 * the writer's end; a pending fault wakes it at once. */
static void *ref_handler(void *arg)
{
	struct ref *r = arg;
	struct uffd_msg msgs[16];
	while (!atomic_load(&r->writer_done)) {
		struct pollfd p = { .fd = r->uffd, .events = POLLIN };
		int n = poll(&p, 1, 10);
		if (n < 0 && errno != EINTR) {
			atomic_store(&r->error, -errno);
			break;
		}
		if (n <= 0)
			continue;
		ssize_t got = read(r->uffd, msgs, sizeof(msgs));
		if (got < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			atomic_store(&r->error, -errno);
			break;
		}
		for (ssize_t i = 0; i < got / (ssize_t)sizeof(msgs[0]); i++) {
			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			uint64_t page = msgs[i].arg.pagefault.address & ~(r->page_size - 1);
			int ret = ref_wp(r->uffd, page, r->page_size, 0);
			if (ret < 0)
				atomic_store(&r->error, ret);
		}
	}
	return NULL;
}

static void *ref_writer(void *arg)
{
	struct ref *r = arg;
	for (uint64_t i = 0; i < r->pages; i++) {
		volatile uint64_t *p = (volatile uint64_t *)(r->mem + i * r->page_size);
		uint64_t t0 = ref_now();
		*p = i + 1;
		r->stalls[i] = ref_now() - t0;
	}
	atomic_store(&r->writer_done, 1);
	return NULL;
}

static int ref_open(void)
{
#ifdef __NR_userfaultfd
	long fd = syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0)
		return (int)fd;
#endif
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -errno;
	int fd2 = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	int saved = errno;
	close(dev);
	return fd2 < 0 ? -saved : fd2;
}

/* Attributes that start a thread on one CPU (cpu < 0: where the caller's threads may run). */
static void on_cpu(pthread_attr_t *attr, int32_t cpu)
{
	pthread_attr_init(attr);
	if (cpu >= 0 && cpu < CPU_SETSIZE) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		pthread_attr_setaffinity_np(attr, sizeof(set), &set);
	}
}

int64_t uffdbench_reference_roundtrip(uint64_t pages, uint64_t *stalls_ns, int32_t timeout_ms,
				      int32_t writer_cpu, int32_t handler_cpu)
{
	struct ref r = { .uffd = -1, .pages = pages, .stalls = stalls_ns };
	int64_t ret = 0;
	long ps = sysconf(_SC_PAGESIZE);
	if (!pages || !stalls_ns || ps <= 0 || pages > (1ull << 40) / (uint64_t)ps)
		return -EINVAL;
	r.page_size = (uint64_t)ps;
	uint64_t len = pages * r.page_size;
	r.mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r.mem == MAP_FAILED)
		return -errno;
	memset(r.mem, 1, len); /* populate: every fault is a WP fault, none a missing page */
	r.uffd = ref_open();
	if (r.uffd < 0) {
		ret = r.uffd;
		goto out;
	}
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP };
	struct uffdio_register reg = { .range = { .start = (uint64_t)(uintptr_t)r.mem, .len = len },
				       .mode = UFFDIO_REGISTER_MODE_WP };
	if (ioctl(r.uffd, UFFDIO_API, &api) < 0 || ioctl(r.uffd, UFFDIO_REGISTER, &reg) < 0) {
		ret = -errno;
		goto out;
	}
	ret = ref_wp(r.uffd, reg.range.start, len, UFFDIO_WRITEPROTECT_MODE_WP);
	if (ret < 0)
		goto out_unregister;

	pthread_t handler, writer;
	pthread_attr_t handler_attr, writer_attr;
	on_cpu(&handler_attr, handler_cpu);
	on_cpu(&writer_attr, writer_cpu);
	int err = pthread_create(&handler, &handler_attr, ref_handler, &r);
	if (err) {
		pthread_attr_destroy(&handler_attr);
		pthread_attr_destroy(&writer_attr);
		ret = -err;
		goto out_unregister;
	}
	err = pthread_create(&writer, &writer_attr, ref_writer, &r);
	pthread_attr_destroy(&handler_attr);
	pthread_attr_destroy(&writer_attr);
	if (err) {
		atomic_store(&r.writer_done, 1);
		pthread_join(handler, NULL);
		ret = -err;
		goto out_unregister;
	}
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	if (pthread_timedjoin_np(writer, NULL, &deadline) != 0) {
		/* Never leave the writer blocked: lift protection and wake it. On a kernel whose
		 * unprotect does not hold, it would fault again for ever: with the handler stopped,
		 * closing the uffd unregisters the range and lets its store through. */
		ret = -ETIMEDOUT;
		ref_wp(r.uffd, reg.range.start, len, 0);
		struct uffdio_range wake = reg.range;
		ioctl(r.uffd, UFFDIO_WAKE, &wake);
		atomic_store(&r.writer_done, 1);
		pthread_join(handler, NULL);
		close(r.uffd);
		r.uffd = -1;
		pthread_join(writer, NULL);
		goto out;
	}
	atomic_store(&r.writer_done, 1);
	pthread_join(handler, NULL);
	if (!ret)
		ret = atomic_load(&r.error) ? atomic_load(&r.error) : (int64_t)pages;
out_unregister:
	ioctl(r.uffd, UFFDIO_UNREGISTER, &reg.range);
out:
	if (r.uffd >= 0)
		close(r.uffd);
	munmap(r.mem, len);
	return ret;
}
