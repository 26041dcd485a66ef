/* SPDX-License-Identifier: GPL-2.0-only */
/* Native background-snapshot engine of uffdwp (QEMU's "background snapshot" design).
 *
 * One engine thread owns the userfaultfd: it freezes the regions (UFFDIO_WRITEPROTECT), then
 * loops { save every faulted page first (copy, unprotect: wakes the writer); save the next chunk
 * of the linear pass and unprotect it }. Pages are copied into a ring of slots; an output thread
 * computes the CRC32C of each record and writes the slots to the target. Everything here runs
 * without the GIL. Functions return 0 or a non-negative result on success and -errno on failure.
 * Plain C declarations only: cffi reads this file as its cdef.
 */
#ifndef UFFDWP_SNAPSHOT_NATIVE_H
#define UFFDWP_SNAPSHOT_NATIVE_H

#include <stdint.h>
#include <stddef.h>

struct uffdsnap_region {
	uint64_t address;
	uint64_t length;
	uint64_t page_size;
	uint64_t chunk_bytes;       /* linear-pass step here; 0: the config's (2 MiB for THP) */
	uint64_t fault_batch_bytes; /* a fault just ahead of the pass saves this much; 0: 64 KiB */
};

struct uffdsnap_config {
	int32_t uffd;          /* registered for WP on every region; made O_NONBLOCK by the engine */
	int32_t out_fd;        /* where the image goes */
	int32_t out_nonblock;  /* out_fd is O_NONBLOCK: wait in poll(), so abort can interrupt */
	int32_t populate;      /* read-populate every region before protecting (no WP_UNPOPULATED) */
	int32_t protect;       /* 1: the engine freezes the regions itself (the usual case) */
	uint32_t n_regions;
	const struct uffdsnap_region *regions;
	const uint8_t *prefix; /* the image header, written before the first record */
	uint64_t prefix_len;
	uint64_t chunk_bytes;  /* linear-pass step (rounded to whole pages): one slot each */
	uint64_t slot_bytes;   /* buffer per slot, for headers and faulted pages' copies */
	uint32_t n_slots;      /* ring slots */
	uint32_t reserve_slots; /* slots the linear pass leaves to faulted pages */
	int32_t busy_poll_us;  /* > 0: the engine spins that long before it sleeps (a core for
				* lower fault latency) */
	int32_t engine_priority; /* 0 inherit; > 0 SCHED_FIFO priority; < 0 a nice value */
	int32_t stall_timeout_ms; /* > 0: fail when a non-blocking target takes nothing that long */
	int32_t fork_fails;    /* a fork event fails the snapshot (a child would share a region) */
};

enum uffdsnap_state {
	UFFDSNAP_RUNNING = 0,
	UFFDSNAP_DONE = 1,
	UFFDSNAP_FAILED = 2,
	UFFDSNAP_ABORTED = 3,
};

enum uffdsnap_phase {
	UFFDSNAP_PHASE_NONE = 0,
	UFFDSNAP_PHASE_POPULATE = 1,
	UFFDSNAP_PHASE_PROTECT = 2,
	UFFDSNAP_PHASE_READ = 3,
	UFFDSNAP_PHASE_UNPROTECT = 4,
	UFFDSNAP_PHASE_OUTPUT = 5,
	UFFDSNAP_PHASE_ABORT = 6,
	UFFDSNAP_PHASE_MEMORY = 7,  /* region memory was unmapped before it was saved */
	UFFDSNAP_PHASE_DISCARD = 8, /* a discard of unsaved pages raced the engine's read */
	UFFDSNAP_PHASE_FORK = 9,    /* a child was forked that shares a region */
	UFFDSNAP_PHASE_PROTECTION = 10, /* a page lost its protection before it was saved */
};

struct uffdsnap_stats {
	uint64_t pages_total;
	uint64_t pages_saved;
	uint64_t linear_pages;
	uint64_t fault_pages;          /* pages saved out of order because a writer faulted */
	uint64_t zero_pages;
	uint64_t data_pages;
	uint64_t faults;               /* WP fault messages read */
	uint64_t faults_already_saved; /* messages for pages saved (and unprotected) meanwhile */
	uint64_t records;
	uint64_t bytes_committed;
	uint64_t bytes_written;
	uint64_t t_start_ns;
	uint64_t t_protect_ns;         /* the first protect ioctl starts */
	uint64_t t_frozen_ns;          /* every region protected: the instant of the image */
	uint64_t t_saved_ns;           /* every page copied and unprotected */
	uint64_t t_end_ns;             /* the end record written */
	uint64_t populate_ns;
	uint64_t protect_ns;
	uint64_t service_max_ns;       /* fault message read -> page unprotected */
	uint64_t service_total_ns;
	uint64_t service_hist[64];     /* log2 buckets in ns */
	uint64_t ring_waits;           /* times the engine waited for output */
	int32_t priority_applied;      /* 1 SCHED_FIFO, 2 nice, 0 inherited (or refused) */
	int32_t state;
	int32_t error;
	int32_t error_phase;
	uint32_t chain_crc;
	uint64_t error_addr;           /* where the error happened, when it has an address */
	uint64_t events;               /* fork/remove messages read */
	uint64_t drains;               /* times a pending event made the engine save all first */
	uint64_t discarded_bytes;      /* bytes the caller discarded (MADV_DONTNEED/REMOVE) */
	uint64_t faults_waited;        /* faults on pages whose slot was being written: they waited
					* for the write */
	uint64_t patched;              /* faults on queued pages: a copy took their place */
	uint64_t batched;              /* pages saved with a fault just ahead of the pass */
	uint64_t engine_cpu_ns;        /* CPU time of the engine thread (set when it ends) */
	uint64_t output_cpu_ns;        /* CPU time of the output thread (set when it ends) */
	uint64_t copied_unprotected;   /* pages of the linear pass the pagemap did not show
					* protected: copied, not written from memory */
};

struct uffdsnap;
struct uffdsnap *uffdsnap_start(const struct uffdsnap_config *cfg, int *err);
void uffdsnap_get_stats(struct uffdsnap *s, struct uffdsnap_stats *out);
/* Every function below accepts NULL for s and does nothing. */
/* Waits up to timeout_ms for the end (done, failed or aborted): 0, or -ETIMEDOUT. */
int uffdsnap_wait(struct uffdsnap *s, int timeout_ms);
/* Asks the engine to stop: it removes all protection and wakes every writer. */
void uffdsnap_abort(struct uffdsnap *s);
/* Aborts if running, joins, removes protection again and wakes every range; frees s.
 * Returns 0 or minus the number of cleanup ioctls that failed. */
int uffdsnap_free(struct uffdsnap *s);

#endif
