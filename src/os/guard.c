/*
 * guard.c — SIGBUS-to-error guard for reads through file mappings.
 *
 * The handler is (re)installed by a guarded call whenever SIGBUS's current
 * disposition is not ours (someone — an engine, a test framework — may have
 * installed theirs after us; one sigaction query per guarded call), and it
 * chains to the disposition it replaced for faults outside a guarded call,
 * so an engine that has its own SIGBUS handler keeps it. Inside a guarded call the thread's
 * sigjmp_buf is armed; the handler siglongjmps to it, the call returns EFAULT,
 * and the signal mask is restored by siglongjmp (sigsetjmp saves it).
 */
#include "os/guard.h"


#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

static struct sigaction guard_prev;
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local sigjmp_buf *guard_jmp;

static void guard_handler(int sig, siginfo_t *info, void *uctx) {
    if (guard_jmp) siglongjmp(*guard_jmp, 1);
    /* not ours: behave as before we were installed */
    if (guard_prev.sa_flags & SA_SIGINFO) {
        guard_prev.sa_sigaction(sig, info, uctx);
    } else if (guard_prev.sa_handler == SIG_IGN) {
        return;
    } else if (guard_prev.sa_handler == SIG_DFL) {
        signal(sig, SIG_DFL);
        raise(sig);
    } else {
        guard_prev.sa_handler(sig);
    }
}

static void guard_install(void) {
    struct sigaction sa, cur;
    if (sigaction(SIGBUS, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
        cur.sa_sigaction == guard_handler)
        return;
    pthread_mutex_lock(&guard_lock);
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = guard_handler;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, NULL, &cur);
    if (!((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == guard_handler))
        sigaction(SIGBUS, &sa, &guard_prev);
    pthread_mutex_unlock(&guard_lock);
}

static atomic_bool guard_off;  /* the host program handles SIGBUS itself (tl_init) */
static atomic_bool guard_used; /* a guarded call happened: the setting is fixed */

void tl__os_guard_disable(bool off) {
    atomic_store(&guard_off, off);
}

bool tl__os_guard_used(void) {
    return atomic_load(&guard_used);
}

int tl__os_guarded_call(void (*fn)(void *arg), void *arg) {
    atomic_store(&guard_used, true);
    if (atomic_load(&guard_off)) {
        fn(arg);
        return 0;
    }
    guard_install();
    sigjmp_buf here;
    sigjmp_buf *volatile outer = guard_jmp;
    if (sigsetjmp(here, 1)) {
        guard_jmp = outer;
        return EFAULT;
    }
    guard_jmp = &here;
    fn(arg);
    guard_jmp = outer;
    return 0;
}

typedef struct copy_args {
    void *dst;
    const void *src;
    size_t n;
} copy_args;

static void do_copy(void *a) {
    copy_args *c = a;
    memcpy(c->dst, c->src, c->n);
}

int tl__os_guarded_copy(void *dst, const void *src, size_t n) {
    copy_args c = {dst, src, n};
    return tl__os_guarded_call(do_copy, &c);
}
