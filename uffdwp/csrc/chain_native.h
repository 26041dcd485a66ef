/* SPDX-License-Identifier: GPL-2.0-only */
/* Test writers whose stores form a causal chain. Plain C declarations only: cffi reads this
 * file as its cdef. */
#ifndef UFFDWP_CHAIN_NATIVE_H
#define UFFDWP_CHAIN_NATIVE_H

#include <stdint.h>

/* A causal chain of writes: step i is stored (value i+1) to addrs[i % n_addrs] by thread
 * i % n_threads, which waits until step i-1 is done. A consistent image shows a prefix. */
struct uffdsnap_chain;
struct uffdsnap_chain *uffdsnap_chain_start(const uint64_t *addrs, uint32_t n_addrs,
					    uint32_t n_threads, uint64_t max_steps, int *err);
uint64_t uffdsnap_chain_steps(struct uffdsnap_chain *c);
/* Asks the threads to stop and joins them within timeout_ms: 0, or -ETIMEDOUT (still blocked). */
int uffdsnap_chain_stop(struct uffdsnap_chain *c, int timeout_ms);
void uffdsnap_chain_free(struct uffdsnap_chain *c);

#endif
