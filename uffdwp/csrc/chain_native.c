// SPDX-License-Identifier: GPL-2.0-only
/* Causal chain writers for consistency tests. See chain_native.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "uffdwp_native.h"
#include "uffdwp_internal.h"
#include "chain_native.h"

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
	struct memguard g;
	if (memguard_take(&g) < 0 || sigsetjmp(g.jb, 0)) /* an address the caller gave is gone */
		goto out;
	for (;;) {
		uint64_t i = atomic_load_explicit(&c->step, memory_order_acquire);
		if (atomic_load_explicit(&c->stop, memory_order_relaxed) ||
		    (c->max_steps && i >= c->max_steps))
			break;
		if (i % c->n_threads != t->index) {
			sched_yield(); /* the other thread's turn: it may be blocked in a fault */
			continue;
		}
		uint64_t addr = c->addrs[i % c->n_addrs];
		memguard_arm(&g, addr, addr + sizeof(uint64_t));
		*(volatile uint64_t *)(uintptr_t)addr = i + 1;
		memguard_disarm(&g);
		atomic_store_explicit(&c->step, i + 1, memory_order_release);
	}
out:
	memguard_release(&g);
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

