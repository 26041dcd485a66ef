// SPDX-License-Identifier: GPL-2.0-only
/* Guarded memory access. See memguard_native.h and uffdwp_internal.h (MEMGUARD_*).
 *
 * A thread arms a guard over an address range, then touches it; if that touch raises SIGSEGV
 * or SIGBUS inside the range, the process-wide handler jumps back to where the thread armed
 * it. Any other fault goes to the handler that was installed before (Python's faulthandler,
 * or the default action), so a real bug still crashes as it would without us.
 *
 * Guards live in a fixed table found by thread id: the handler needs no allocation, no lock
 * and no thread-local storage (which a dlopen'ed module may allocate lazily).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "uffdwp_internal.h"
#include "memguard_native.h"

#define GUARD_SLOTS 2048

struct guard_slot {
	_Atomic pid_t tid; /* 0: free */
	sigjmp_buf *_Atomic jb; /* NULL: slot taken, guard not armed */
	_Atomic uintptr_t lo, hi;
};

static struct guard_slot slots[GUARD_SLOTS];
static struct sigaction previous[2]; /* SIGSEGV, SIGBUS */
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int install_error;

static pid_t current_tid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

static void chain(int sig, siginfo_t *si, void *uc)
{
	struct sigaction *old = &previous[sig == SIGBUS];
	if (old->sa_flags & SA_SIGINFO) {
		old->sa_sigaction(sig, si, uc);
		return;
	}
	if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
		old->sa_handler(sig);
		return;
	}
	/* Default action: put it back; a real fault re-executes and kills, a signal sent by
	 * kill(2) is raised again (SA_NODEFER: it is not blocked here). */
	struct sigaction dfl;
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigaction(sig, &dfl, NULL);
	if (si->si_code <= 0)
		raise(sig);
}

static void on_fault(int sig, siginfo_t *si, void *uc)
{
	pid_t tid = current_tid();
	uintptr_t addr = (uintptr_t)si->si_addr;
	if (si->si_code > 0) /* raised by the CPU, not sent by someone */
		for (int i = 0; i < GUARD_SLOTS; i++) {
			if (atomic_load_explicit(&slots[i].tid, memory_order_relaxed) != tid)
				continue;
			sigjmp_buf *jb = atomic_load(&slots[i].jb);
			if (jb && addr >= atomic_load(&slots[i].lo) && addr < atomic_load(&slots[i].hi)) {
				atomic_store(&slots[i].jb, NULL);
				siglongjmp(*jb, sig);
			}
		}
	chain(sig, si, uc);
}

static void install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_fault;
	/* NODEFER: the jump leaves the handler without restoring the mask (sigsetjmp(.., 0)),
	 * so the signal must not be blocked while it runs. ONSTACK: a thread with an alternate
	 * stack (faulthandler gives the main thread one) keeps using it. */
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, &previous[0]) < 0 || sigaction(SIGBUS, &sa, &previous[1]) < 0)
		install_error = -errno;
}

int memguard_take(struct memguard *g)
{
	g->slot = -1;
	pthread_once(&install_once, install);
	if (install_error)
		return install_error;
	pid_t tid = current_tid();
	for (int i = 0; i < GUARD_SLOTS; i++) {
		pid_t free_tid = 0;
		if (atomic_compare_exchange_strong(&slots[i].tid, &free_tid, tid)) {
			g->slot = i;
			return 0;
		}
	}
	return -EMFILE;
}

void memguard_arm(struct memguard *g, uintptr_t lo, uintptr_t hi)
{
	struct guard_slot *s = &slots[g->slot];
	atomic_store(&s->lo, lo);
	atomic_store(&s->hi, hi);
	atomic_store(&s->jb, &g->jb);
}

void memguard_disarm(struct memguard *g)
{
	atomic_store(&slots[g->slot].jb, NULL);
}

void memguard_release(struct memguard *g)
{
	if (g->slot < 0)
		return;
	atomic_store(&slots[g->slot].jb, NULL);
	atomic_store(&slots[g->slot].tid, 0);
	g->slot = -1;
}

static uintptr_t lowest(uintptr_t a, uintptr_t b)
{
	return a < b ? a : b;
}

int uffdwp_guarded_copy(uint64_t dst, uint64_t src, uint64_t n)
{
	struct memguard g;
	int ret = memguard_take(&g);
	if (ret < 0)
		return ret;
	if (sigsetjmp(g.jb, 0)) {
		memguard_release(&g);
		return -EFAULT;
	}
	/* one range covering both sides: a fault anywhere in either is the caller's */
	uintptr_t lo = lowest((uintptr_t)dst, (uintptr_t)src);
	uintptr_t hi = (uintptr_t)(dst > src ? dst + n : src + n);
	memguard_arm(&g, lo, hi);
	memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
	memguard_release(&g);
	return 0;
}
