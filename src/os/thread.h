/*
 * thread.h — threads, mutexes and condition variables.
 *
 * Every thread the library starts goes through tl__os_thread_start (which consults the fault
 * injector as an allocation), or tl__os_thread_start_optional for helpers the work does not
 * need. Mutexes are tl__os_mutex: a pthread mutex that, in debug builds
 * (TL_DEBUG_ASSERTS), also records which thread holds it, so that code can state "this lock is
 * held here" as a check instead of a comment:
 *
 *     static void retire_locked(dev *d) { tl__os_mutex_assert_held(&d->lock); ... }
 *
 * The convention: a function whose name ends in _locked must be called with its object's lock
 * held, and starts with tl__os_mutex_assert_held. In debug builds locking a mutex twice from one
 * thread, or unlocking one this thread does not hold, also fails loudly (os/debug.h) instead of
 * deadlocking or corrupting state. Release builds carry no owner and no checks.
 */
#ifndef TL_OS_THREAD_H
#define TL_OS_THREAD_H

#include "os/debug.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct tl__os_thread tl__os_thread;

/* Start fn(arg) on a new thread; 0 or an errno. */
int tl__os_thread_start(tl__os_thread **out, void *(*fn)(void *), void *arg);
/*
 * The same for a helper the work does not need (os/team.c: without it the work is done, only
 * slower): not fault-injected, since its failure changes nothing a test could see.
 */
int tl__os_thread_start_optional(tl__os_thread **out, void *(*fn)(void *), void *arg);
/* Wait for the thread to end and free it. NULL is fine. */
void tl__os_thread_join(tl__os_thread *t);
/* Sleep for s seconds. */
void tl__os_sleep(double s);
/* The CPUs this process may run on (its affinity mask; the online count if unknown), >= 1. */
unsigned tl__os_cpu_count(void);

typedef struct tl__os_mutex {
    pthread_mutex_t mu;
#ifdef TL_DEBUG_ASSERTS
    _Atomic uintptr_t owner; /* the holder's identity (tl__os_thread_self), 0 when free */
#endif
} tl__os_mutex;

typedef struct tl__os_cond {
    pthread_cond_t cv;
} tl__os_cond;

/* An identity of the calling thread, unique among live threads and never 0. */
uintptr_t tl__os_thread_self(void);

/* 0 or an errno. */
int tl__os_mutex_init(tl__os_mutex *m);
void tl__os_mutex_destroy(tl__os_mutex *m);
void tl__os_mutex_lock(tl__os_mutex *m);
void tl__os_mutex_unlock(tl__os_mutex *m);
/* Does the calling thread hold m? Known only in debug builds; always true otherwise. */
bool tl__os_mutex_held(tl__os_mutex *m);

#ifdef TL_DEBUG_ASSERTS
#define tl__os_mutex_assert_held(m)                                                                 \
    (tl__os_mutex_held(m)                                                                           \
         ? (void)0                                                                                 \
         : tl__os_assert_fail(__FILE__, __LINE__, "lock " #m " held by this thread"))
#else
#define tl__os_mutex_assert_held(m) ((void)0)
#endif

/* 0 or an errno. Waits use CLOCK_MONOTONIC. */
int tl__os_cond_init(tl__os_cond *c);
void tl__os_cond_destroy(tl__os_cond *c);
/* Wait with m held (released while waiting, held again on return). */
void tl__os_cond_wait(tl__os_cond *c, tl__os_mutex *m);
/* The same for at most s seconds; false when the time ran out. */
bool tl__os_cond_timedwait(tl__os_cond *c, tl__os_mutex *m, double s);
void tl__os_cond_signal(tl__os_cond *c);
void tl__os_cond_broadcast(tl__os_cond *c);

#endif
