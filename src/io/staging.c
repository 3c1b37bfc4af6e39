/*
 * staging.c — the bounded staging ring (see io/staging.h).
 */
#include "io/staging.h"
#include "os/hostmem.h"
#include "os/os.h"

#include <errno.h>
#include <stdlib.h>

int tl__staging_init(tl__staging *s, unsigned count, uint64_t size) {
    s->size = size;
    s->count = count;
    s->allocated = 0;
    s->bufs = tl__os_calloc(count, sizeof *s->bufs);
    s->busy = tl__os_calloc(count, sizeof *s->busy);
    if (!s->bufs || !s->busy) {
        free(s->bufs);
        free(s->busy);
        s->bufs = NULL;
        s->busy = NULL;
        return ENOMEM;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    return 0;
}

int tl__staging_take(tl__staging *s, unsigned char **buf) {
    pthread_mutex_lock(&s->mu);
    for (;;) {
        for (unsigned i = 0; i < s->allocated; i++) {
            if (!s->busy[i]) {
                s->busy[i] = true;
                *buf = s->bufs[i];
                pthread_mutex_unlock(&s->mu);
                return 0;
            }
        }
        if (s->allocated < s->count) {
            void *p;
            uint64_t len;
            /* staging is reused, not kept: 4 KiB pages avoid 2 MiB rounding of the bound */
            int e = tl__os_anon_alloc(s->size, TL_OS_PAGES_SMALL, &p, &len);
            if (e) {
                pthread_mutex_unlock(&s->mu);
                return e;
            }
            s->bufs[s->allocated] = p;
            s->busy[s->allocated] = true;
            s->allocated++;
            *buf = p;
            pthread_mutex_unlock(&s->mu);
            return 0;
        }
        pthread_cond_wait(&s->cv, &s->mu);
    }
}

void tl__staging_give(tl__staging *s, unsigned char *buf) {
    pthread_mutex_lock(&s->mu);
    for (unsigned i = 0; i < s->allocated; i++)
        if (s->bufs[i] == buf) s->busy[i] = false;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

uint64_t tl__staging_used(const tl__staging *s) {
    return (uint64_t)s->allocated * s->size;
}

void tl__staging_free(tl__staging *s) {
    if (!s->bufs) return;
    for (unsigned i = 0; i < s->allocated; i++)
        tl__os_anon_free(s->bufs[i], s->size);
    free(s->bufs);
    free(s->busy);
    s->bufs = NULL;
    s->busy = NULL;
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}
