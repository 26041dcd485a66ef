// SPDX-License-Identifier: GPL-2.0-only
/* A kernel whose userfaultfd misbehaves in one way, for tests only (never a conformance verdict):
 * LD_PRELOADed into a run, it bends what ioctl() and read() on a userfaultfd return. The native
 * module and Python both reach the kernel through libc's ioctl() and read(), so every uffd call
 * of the suites passes here. UFFDWP_BADKERNEL names the misbehaviour:
 *
 *   extra-bit          UFFDIO_API advertises an unknown feature bit (40) it does not accept
 *   no-wp-unpopulated  UFFDIO_API stops advertising WP_UNPOPULATED (still accepted when asked)
 *   no-wp              no write-protect at all: WP features neither advertised nor accepted,
 *                      REGISTER with MODE_WP refused
 *   unprotect-noop     UFFDIO_WRITEPROTECT without MODE_WP does nothing (and wakes nobody)
 *   unprotect-wake     ... only wakes: the page stays protected, the writer faults again
 *   no-wp-flag         fault messages lose UFFD_PAGEFAULT_FLAG_WP
 *   addr-off           fault messages give an address one page too high
 *   dontwake-wakes     UFFDIO_COPY ignores MODE_DONTWAKE (wakes the faulting thread)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define IOC(dir, nr, size) (((unsigned long)(dir) << 30) | ((size) << 16) | (0xAA << 8) | (nr))
#define UFFDIO_API_ IOC(3, 0x3F, 24)
#define UFFDIO_REGISTER_ IOC(3, 0x00, 32)
#define UFFDIO_WAKE_ IOC(2, 0x02, 16)
#define UFFDIO_COPY_ IOC(3, 0x03, 40)
#define UFFDIO_WRITEPROTECT_ IOC(3, 0x06, 24)

#define F_WP (1ull << 0)
#define F_WP_HUGETLBFS_SHMEM (1ull << 12)
#define F_WP_UNPOPULATED (1ull << 13)
#define F_WP_ASYNC (1ull << 15)
#define F_WP_ALL (F_WP | F_WP_HUGETLBFS_SHMEM | F_WP_UNPOPULATED | F_WP_ASYNC)
#define EXTRA_BIT (1ull << 40)

struct api { uint64_t api, features, ioctls; };
struct range { uint64_t start, len; };
struct reg { struct range range; uint64_t mode, ioctls; };
struct copy { uint64_t dst, src, len, mode; int64_t copy; };
struct wp { struct range range; uint64_t mode; };
struct msg { uint8_t event, r1; uint16_t r2; uint32_t r3;
	     union { struct { uint64_t flags, address; uint32_t ptid; } pf; uint64_t raw[3]; } arg; };

static const char *mode(void)
{
	static const char *m;
	if (!m) {
		m = getenv("UFFDWP_BADKERNEL");
		if (!m)
			m = "";
	}
	return m;
}

static int is(const char *name) { return strcmp(mode(), name) == 0; }

/* fds that went through UFFDIO_API: the ones whose read() is a uffd_msg stream */
#define MAX_FD 65536
static unsigned char uffd_fd[MAX_FD];

int ioctl(int fd, unsigned long req, ...)
{
	static int (*real)(int, unsigned long, void *);
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	if (!real)
		real = (int (*)(int, unsigned long, void *))dlsym(RTLD_NEXT, "ioctl");

	if (req == UFFDIO_API_) {
		struct api *a = arg;
		if ((is("extra-bit") && (a->features & EXTRA_BIT)) ||
		    (is("no-wp") && (a->features & F_WP_ALL))) {
			errno = EINVAL;
			return -1;
		}
		int ret = real(fd, req, arg);
		if (ret == 0) {
			if (fd >= 0 && fd < MAX_FD)
				uffd_fd[fd] = 1;
			if (is("extra-bit"))
				a->features |= EXTRA_BIT;
			if (is("no-wp-unpopulated"))
				a->features &= ~F_WP_UNPOPULATED;
			if (is("no-wp"))
				a->features &= ~F_WP_ALL;
		}
		return ret;
	}
	if (req == UFFDIO_REGISTER_ && is("no-wp") && (((struct reg *)arg)->mode & 2)) {
		errno = EINVAL;
		return -1;
	}
	if (req == UFFDIO_WRITEPROTECT_ && !(((struct wp *)arg)->mode & 1)) {
		struct wp *w = arg;
		if (is("unprotect-noop"))
			return 0;
		if (is("unprotect-wake")) {
			struct range r = w->range;
			return real(fd, UFFDIO_WAKE_, &r) < 0 && errno != ENOENT ? -1 : 0;
		}
	}
	if (req == UFFDIO_COPY_ && is("dontwake-wakes"))
		((struct copy *)arg)->mode &= ~1ull;
	return real(fd, req, arg);
}

ssize_t read(int fd, void *buf, size_t count)
{
	static ssize_t (*real)(int, void *, size_t);
	if (!real)
		real = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
	ssize_t n = real(fd, buf, count);
	if (n <= 0 || fd < 0 || fd >= MAX_FD || !uffd_fd[fd] || n % sizeof(struct msg))
		return n;
	struct msg *m = buf;
	for (ssize_t i = 0; i < n / (ssize_t)sizeof(*m); i++) {
		if (m[i].event != 0x12)
			continue;
		if (is("no-wp-flag"))
			m[i].arg.pf.flags &= ~2ull;
		if (is("addr-off"))
			m[i].arg.pf.address += 4096;
	}
	return n;
}

int close(int fd)
{
	static int (*real)(int);
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "close");
	if (fd >= 0 && fd < MAX_FD)
		uffd_fd[fd] = 0;
	return real(fd);
}
