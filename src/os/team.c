/*
 * team.c — helper threads sharing the pieces of a job (see os/team.h).
 */
#include "os/team.h"

#include "os/os.h"
#include "os/thread.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#define TEAM_MAX_HELPERS 7u

struct tl__team {
    tl__os_mutex turn; /* one job at a time */
    tl__os_mutex mu;   /* guards what follows */
    tl__os_cond work;  /* a job was posted, or stop */
    tl__os_cond idle;  /* a helper left the job */
    unsigned want, started;
    tl__os_thread *th[TEAM_MAX_HELPERS];
    bool stop;
    uint64_t gen; /* jobs posted */
    bool open;    /* helpers may still join the job of gen */
    unsigned busy; /* helpers inside the job */
    /* the job */
    size_t n;
    atomic_size_t next;
    void (*fn)(void *arg, size_t i);
    void *arg;
};

static void pieces(tl__team *t) {
    for (size_t i; (i = atomic_fetch_add(&t->next, 1)) < t->n;)
        t->fn(t->arg, i);
}

static void *helper(void *arg) {
    tl__team *t = arg;
    uint64_t seen = 0;
    tl__os_mutex_lock(&t->mu);
    for (;;) {
        while (!t->stop && !(t->open && t->gen != seen))
            tl__os_cond_wait(&t->work, &t->mu);
        if (t->stop) break;
        seen = t->gen;
        t->busy++;
        tl__os_mutex_unlock(&t->mu);
        pieces(t);
        tl__os_mutex_lock(&t->mu);
        if (--t->busy == 0) tl__os_cond_signal(&t->idle);
    }
    tl__os_mutex_unlock(&t->mu);
    return NULL;
}

unsigned tl__team_default_helpers(void) {
    unsigned n = tl__os_cpu_count();
    return n > TEAM_MAX_HELPERS + 1 ? TEAM_MAX_HELPERS : n - 1;
}

tl__team *tl__team_create(unsigned helpers) {
    tl__team *t = tl__os_calloc_optional(1, sizeof *t); /* a missing team only runs slower */
    if (!t) return NULL;
    if (tl__os_mutex_init(&t->turn) || tl__os_mutex_init(&t->mu) || tl__os_cond_init(&t->work) ||
        tl__os_cond_init(&t->idle)) {
        free(t);
        return NULL;
    }
    t->want = helpers < TEAM_MAX_HELPERS ? helpers : TEAM_MAX_HELPERS;
    return t;
}

void tl__team_destroy(tl__team *t) {
    if (!t) return;
    tl__os_mutex_lock(&t->mu);
    t->stop = true;
    tl__os_cond_broadcast(&t->work);
    tl__os_mutex_unlock(&t->mu);
    for (unsigned i = 0; i < t->started; i++)
        tl__os_thread_join(t->th[i]);
    tl__os_cond_destroy(&t->work);
    tl__os_cond_destroy(&t->idle);
    tl__os_mutex_destroy(&t->mu);
    tl__os_mutex_destroy(&t->turn);
    free(t);
}

void tl__team_run(tl__team *t, size_t n, void (*fn)(void *arg, size_t i), void *arg) {
    if (!t || n < 2) {
        for (size_t i = 0; i < n; i++)
            fn(arg, i);
        return;
    }
    tl__os_mutex_lock(&t->turn);
    /* helpers start with the first job; one that cannot start is not retried */
    while (t->started < t->want) {
        if (tl__os_thread_start_optional(&t->th[t->started], helper, t)) {
            t->want = t->started;
            break;
        }
        t->started++;
    }
    tl__os_mutex_lock(&t->mu);
    t->n = n;
    t->fn = fn;
    t->arg = arg;
    atomic_store(&t->next, 0);
    t->gen++;
    t->open = t->started > 0;
    if (t->open) tl__os_cond_broadcast(&t->work);
    tl__os_mutex_unlock(&t->mu);
    pieces(t);
    tl__os_mutex_lock(&t->mu);
    t->open = false; /* a helper waking now finds no job */
    while (t->busy)
        tl__os_cond_wait(&t->idle, &t->mu);
    tl__os_mutex_unlock(&t->mu);
    tl__os_mutex_unlock(&t->turn);
}
