/*
 * thread.c — POSIX threads, mutexes and condition variables behind os/thread.h.
 *
 * A thread runs on a stack of ours (the default size, a guard page below it), unmapped when
 * the thread is joined: glibc keeps the stacks of ended threads for reuse with their top pages
 * resident (every library's thread-local storage, the thread's descriptor), so a job's workers
 * would leave those pages in the process's RSS after the job.
 */
#include "os/thread.h"
#include "os/fault.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct tl__os_thread {
    pthread_t t;
    void *map; /* guard page and stack; NULL: glibc's own stack */
    size_t map_len;
};

/* The default stack size (RLIMIT_STACK, as glibc takes it), in whole pages. */
static size_t stack_len(size_t page) {
    pthread_attr_t a;
    size_t n = 0;
    if (pthread_attr_init(&a) == 0) {
        if (pthread_attr_getstacksize(&a, &n) != 0) n = 0;
        pthread_attr_destroy(&a);
    }
    if (n < (size_t)PTHREAD_STACK_MIN + (64u << 10)) n = (size_t)PTHREAD_STACK_MIN + (64u << 10);
    return (n + page - 1) / page * page;
}

/* Start t on a stack of its own mapping (glibc's where none can be made); 0 or an errno. */
static int start(tl__os_thread *t, void *(*fn)(void *), void *arg) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), len = stack_len(page);
    void *p = mmap(NULL, len + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) return pthread_create(&t->t, NULL, fn, arg);
    pthread_attr_t a;
    int e = mprotect(p, page, PROT_NONE) ? errno : pthread_attr_init(&a);
    if (e == 0) {
        e = pthread_attr_setstack(&a, (char *)p + page, len);
        if (e == 0) e = pthread_create(&t->t, &a, fn, arg);
        pthread_attr_destroy(&a);
    }
    if (e) {
        munmap(p, len + page);
        return e;
    }
    t->map = p;
    t->map_len = len + page;
    return 0;
}

int tl__os_thread_start(tl__os_thread **out, void *(*fn)(void *), void *arg) {
    if (tl__fault_hit(TL_FAULT_ALLOC)) return ENOMEM;
    return tl__os_thread_start_optional(out, fn, arg);
}

int tl__os_thread_start_optional(tl__os_thread **out, void *(*fn)(void *), void *arg) {
    tl__os_thread *t = calloc(1, sizeof *t);
    if (!t) return ENOMEM;
    int e = start(t, fn, arg);
    if (e) {
        free(t);
        return e;
    }
    *out = t;
    return 0;
}

void tl__os_thread_join(tl__os_thread *t) {
    if (!t) return;
    pthread_join(t->t, NULL);
    if (t->map) munmap(t->map, t->map_len);
    free(t);
}

void tl__os_sleep(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

unsigned tl__os_cpu_count(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return (unsigned)n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1u;
}

/* The address of a thread-local object: distinct for every live thread, never 0. */
static _Thread_local char self_tag;

uintptr_t tl__os_thread_self(void) {
    return (uintptr_t)&self_tag;
}

int tl__os_mutex_init(tl__os_mutex *m) {
#ifdef TL_DEBUG_ASSERTS
    atomic_init(&m->owner, 0);
#endif
    return pthread_mutex_init(&m->mu, NULL);
}

void tl__os_mutex_destroy(tl__os_mutex *m) {
#ifdef TL_DEBUG_ASSERTS
    if (atomic_load_explicit(&m->owner, memory_order_relaxed) != 0)
        tl__os_assert_fail(__FILE__, __LINE__, "mutex destroyed while held");
#endif
    pthread_mutex_destroy(&m->mu);
}

void tl__os_mutex_lock(tl__os_mutex *m) {
#ifdef TL_DEBUG_ASSERTS
    if (atomic_load_explicit(&m->owner, memory_order_relaxed) == tl__os_thread_self())
        tl__os_assert_fail(__FILE__, __LINE__, "mutex locked twice by one thread");
#endif
    pthread_mutex_lock(&m->mu);
#ifdef TL_DEBUG_ASSERTS
    atomic_store_explicit(&m->owner, tl__os_thread_self(), memory_order_relaxed);
#endif
}

void tl__os_mutex_unlock(tl__os_mutex *m) {
#ifdef TL_DEBUG_ASSERTS
    if (atomic_load_explicit(&m->owner, memory_order_relaxed) != tl__os_thread_self())
        tl__os_assert_fail(__FILE__, __LINE__, "mutex unlocked by a thread that does not hold it");
    atomic_store_explicit(&m->owner, 0, memory_order_relaxed);
#endif
    pthread_mutex_unlock(&m->mu);
}

bool tl__os_mutex_held(tl__os_mutex *m) {
#ifdef TL_DEBUG_ASSERTS
    return atomic_load_explicit(&m->owner, memory_order_relaxed) == tl__os_thread_self();
#else
    (void)m;
    return true;
#endif
}

int tl__os_cond_init(tl__os_cond *c) {
    pthread_condattr_t a;
    int e = pthread_condattr_init(&a);
    if (e) return e;
    e = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (!e) e = pthread_cond_init(&c->cv, &a);
    pthread_condattr_destroy(&a);
    return e;
}

void tl__os_cond_destroy(tl__os_cond *c) {
    pthread_cond_destroy(&c->cv);
}

void tl__os_cond_wait(tl__os_cond *c, tl__os_mutex *m) {
    tl__os_mutex_assert_held(m);
#ifdef TL_DEBUG_ASSERTS
    atomic_store_explicit(&m->owner, 0, memory_order_relaxed);
#endif
    pthread_cond_wait(&c->cv, &m->mu);
#ifdef TL_DEBUG_ASSERTS
    atomic_store_explicit(&m->owner, tl__os_thread_self(), memory_order_relaxed);
#endif
}

bool tl__os_cond_timedwait(tl__os_cond *c, tl__os_mutex *m, double s) {
    tl__os_mutex_assert_held(m);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (s < 0) s = 0;
    time_t whole = (time_t)s;
    long ns = ts.tv_nsec + (long)((s - (double)whole) * 1e9);
    ts.tv_sec += whole + ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
#ifdef TL_DEBUG_ASSERTS
    atomic_store_explicit(&m->owner, 0, memory_order_relaxed);
#endif
    int e = pthread_cond_timedwait(&c->cv, &m->mu, &ts);
#ifdef TL_DEBUG_ASSERTS
    atomic_store_explicit(&m->owner, tl__os_thread_self(), memory_order_relaxed);
#endif
    return e != ETIMEDOUT;
}

void tl__os_cond_signal(tl__os_cond *c) {
    pthread_cond_signal(&c->cv);
}

void tl__os_cond_broadcast(tl__os_cond *c) {
    pthread_cond_broadcast(&c->cv);
}
