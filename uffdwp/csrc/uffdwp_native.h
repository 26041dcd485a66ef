/* SPDX-License-Identifier: GPL-2.0-only */
/* Native building blocks of uffdwp: syscall wrappers and threads that never need the GIL.
 * Functions return 0 or a non-negative result on success and -errno on failure.
 */
#ifndef UFFDWP_NATIVE_H
#define UFFDWP_NATIVE_H

#include <stdint.h>
#include <stddef.h>

/* --- syscall and ioctl wrappers (cffi releases the GIL around each call) --------------------- */
int uffdwp_open_syscall(int flags);
int uffdwp_open_dev(const char *path, int flags);
int uffdwp_ioctl(int fd, unsigned long request, void *arg);
int uffdwp_read_msgs(int fd, void *buf, size_t max_msgs);
int uffdwp_poll_in(int fd, int timeout_ms);
int uffdwp_close(int fd);
/* A single store/load performed in C, so a Python thread blocks in a fault without the GIL.
 * 0, or -EFAULT where addr is not mapped (or not writable). */
int uffdwp_store_u64(uint64_t addr, uint64_t value);
int uffdwp_load_u64(uint64_t addr, uint64_t *value);
uint64_t uffdwp_now_ns(void);

/* --- fault-servicing thread -------------------------------------------------------------------- */
enum uffdwp_policy {
	UFFDWP_POLICY_UNPROTECT = 0,      /* WP fault: unprotect the page (which wakes the writer) */
	UFFDWP_POLICY_COPY_UNPROTECT = 1, /* WP fault: copy the page out first, then unprotect */
	UFFDWP_POLICY_RECORD = 2,         /* record only; the caller resolves the fault */
};

struct uffdwp_record {
	uint64_t t_read_ns;  /* when the message was read (CLOCK_MONOTONIC) */
	uint64_t t_done_ns;  /* when the fault was resolved (0 if not resolved here) */
	uint64_t address;    /* fault address; for events, the first payload word */
	uint64_t arg2;       /* events: second payload word */
	uint64_t arg3;       /* events: third payload word */
	uint32_t flags;      /* UFFD_PAGEFAULT_FLAG_* */
	uint32_t tid;        /* faulting thread (UFFD_FEATURE_THREAD_ID) */
	uint8_t event;       /* UFFD_EVENT_* */
	uint8_t pad[3];
	int32_t error;       /* -errno of the resolving ioctl, 0 if it succeeded */
};

/* WP faults in a row on one page, each resolved, after which the handler gives up on it:
 * far above any test's protect/write cycles on one page, reached in well under a second by a
 * kernel whose unprotect wakes the writer but leaves the page protected. */
enum { UFFDWP_MAX_REFAULTS = 65536 };

struct uffdwp_handler_stats {
	uint64_t messages;
	uint64_t wp_faults;
	uint64_t missing_faults;
	uint64_t minor_faults;
	uint64_t events;
	uint64_t resolved;
	uint64_t errors;
	uint64_t dropped_records;
	/* WP faults the handler gave up on: the same page faulted again right after each of
	 * UFFDWP_MAX_REFAULTS resolutions (a kernel whose unprotect does not hold); the writer is
	 * left blocked (stop() lifts and wakes), the fault recorded with -ELOOP */
	uint64_t gave_up;
	int32_t running;
	int32_t last_error;
};

/* Every function below accepts NULL for h and does nothing (stats read as zero). */
struct uffdwp_handler;
struct uffdwp_handler *uffdwp_handler_start(int uffd, int policy, uint64_t page_size,
					    const uint64_t *ranges, size_t n_ranges,
					    uint64_t copy_to, size_t record_capacity, int *err);
void uffdwp_handler_get_stats(struct uffdwp_handler *h, struct uffdwp_handler_stats *out);
size_t uffdwp_handler_records(struct uffdwp_handler *h, struct uffdwp_record *out, size_t max);
/* Stops the thread, then unprotects and wakes every range it was given, and gives the fd back
 * its O_NONBLOCK setting. Returns how many of those cleanup ioctls failed (as a negative
 * count) or 0. Frees h. */
int uffdwp_handler_stop(struct uffdwp_handler *h);

/* --- writer thread ----------------------------------------------------------------------------- */
enum uffdwp_pattern {
	UFFDWP_PATTERN_SEQUENTIAL = 0,
	UFFDWP_PATTERN_RANDOM = 1,
	UFFDWP_PATTERN_HOTSPOT = 2, /* 90% of writes to the first 10% of pages */
};

struct uffdwp_write_record {
	uint64_t t_start_ns;
	uint64_t stall_ns;
	uint64_t address;
	uint64_t value;
};

struct uffdwp_writer_stats {
	uint64_t writes;
	uint64_t max_stall_ns;
	uint64_t total_stall_ns;
	uint64_t t_start_ns;
	uint64_t t_end_ns;
	uint64_t dropped_records;
	uint64_t histogram[64]; /* log2 buckets of stall in ns: bucket i holds [2^i, 2^(i+1)) */
	int32_t running;
	int32_t error; /* -EFAULT: the range was unmapped under the writer, which stopped */
};

/* Every function below accepts NULL for w and does nothing (stats read as zero). */
struct uffdwp_writer;
struct uffdwp_writer *uffdwp_writer_start(uint64_t addr, uint64_t len, uint64_t page_size,
					  uint64_t offset_in_page, int pattern,
					  uint64_t writes_per_second, uint64_t max_writes,
					  uint64_t seed, uint64_t value_base,
					  size_t record_capacity, int *err);
void uffdwp_writer_get_stats(struct uffdwp_writer *w, struct uffdwp_writer_stats *out);
size_t uffdwp_writer_records(struct uffdwp_writer *w, struct uffdwp_write_record *out, size_t max);
/* Waits up to timeout_ms for the writer to finish its writes; 0 if done, -ETIMEDOUT if not. */
int uffdwp_writer_wait(struct uffdwp_writer *w, int timeout_ms);
void uffdwp_writer_request_stop(struct uffdwp_writer *w);
/* Keep the writer asleep pct percent of the time (0..99, clamped), as QEMU's auto-converge
 * throttles a vCPU: it runs 10 ms slices and sleeps pct/(100-pct) of a slice after each. */
void uffdwp_writer_set_throttle(struct uffdwp_writer *w, int pct);
/* Joins the thread (it must not be blocked in a fault any more) and frees w. */
void uffdwp_writer_free(struct uffdwp_writer *w);

#endif
