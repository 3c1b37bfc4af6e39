/*
 * thread.c — POSIX threads behind os/thread.h.
 */
#include "os/thread.h"
#include "os/fault.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct tl_os_thread {
    pthread_t t;
};

int tl_os_thread_start(tl_os_thread **out, void *(*fn)(void *), void *arg) {
    if (tl_fault_hit(TL_FAULT_ALLOC)) return ENOMEM;
    tl_os_thread *t = malloc(sizeof *t);
    if (!t) return ENOMEM;
    int e = pthread_create(&t->t, NULL, fn, arg);
    if (e) {
        free(t);
        return e;
    }
    *out = t;
    return 0;
}

void tl_os_thread_join(tl_os_thread *t) {
    if (!t) return;
    pthread_join(t->t, NULL);
    free(t);
}

void tl_os_sleep(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}
