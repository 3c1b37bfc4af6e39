/*
 * gatedev.c — the gated test device of gatedev.h. Allocations are malloc'd
 * blocks with their size in a header; the devptr is the block's data address
 * (host_pointer is false, so callers never dereference it).
 */
#include "gatedev.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tu_gatedev {
    tl_device_ops ops;
    tl_device *d;
    char name[TL_DEVICE_NAME_MAX];
    uint64_t cap, used;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned hold;    /* copies still to be held */
    unsigned waiting; /* copies held now */
    uint64_t gate;    /* bumped by each open */
    tu_gatecopy *log;
    size_t n_log, cap_log;
};

#define HDR 64u

static tl_status g_describe(void *self, tl_device_info *out) {
    tu_gatedev *g = self;
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", g->name);
    snprintf(out->desc, sizeof out->desc, "test device with a gate");
    out->kind = TL_DEVICE_OTHER;
    pthread_mutex_lock(&g->mu);
    out->total = g->cap;
    out->free = g->cap - g->used;
    pthread_mutex_unlock(&g->mu);
    out->alignment = 64;
    return TL_OK;
}

static tl_status g_alloc(void *self, uint64_t size, tl_devptr *out) {
    tu_gatedev *g = self;
    pthread_mutex_lock(&g->mu);
    bool fits = size <= g->cap - g->used;
    if (fits) g->used += size;
    pthread_mutex_unlock(&g->mu);
    if (!fits) return tl_set_error(TL_ERR_DEVICE_OOM, "%s: out of memory", g->name);
    unsigned char *p = calloc(1, HDR + size);
    if (!p) abort();
    memcpy(p, &size, sizeof size);
    *out = (tl_devptr)(uintptr_t)(p + HDR);
    return TL_OK;
}

static tl_status g_dealloc(void *self, tl_devptr ptr) {
    tu_gatedev *g = self;
    unsigned char *p = (unsigned char *)(uintptr_t)ptr - HDR;
    uint64_t size;
    memcpy(&size, p, sizeof size);
    free(p);
    pthread_mutex_lock(&g->mu);
    g->used -= size;
    pthread_mutex_unlock(&g->mu);
    return TL_OK;
}

static tl_status g_copy_to(void *self, tl_devptr dst, const void *src, uint64_t n) {
    tu_gatedev *g = self;
    pthread_mutex_lock(&g->mu);
    if (g->hold) {
        g->hold--;
        g->waiting++;
        uint64_t gate = g->gate;
        pthread_cond_broadcast(&g->cv);
        while (g->gate == gate)
            pthread_cond_wait(&g->cv, &g->mu);
        g->waiting--;
    }
    pthread_mutex_unlock(&g->mu);
    memcpy((void *)(uintptr_t)dst, src, n);
    pthread_mutex_lock(&g->mu);
    if (g->n_log == g->cap_log) {
        g->cap_log = g->cap_log ? 2 * g->cap_log : 256;
        g->log = realloc(g->log, g->cap_log * sizeof *g->log);
        if (!g->log) abort();
    }
    g->log[g->n_log++] = (tu_gatecopy){dst, n};
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    return TL_OK;
}

static tl_status g_copy_from(void *self, void *dst, tl_devptr src, uint64_t n) {
    (void)self;
    memcpy(dst, (const void *)(uintptr_t)src, n);
    return TL_OK;
}

static void g_destroy(void *self) {
    tu_gatedev *g = self;
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g->log);
    free(g);
}

tu_gatedev *tu_gatedev_add(const char *name, uint64_t cap) {
    tu_gatedev *g = calloc(1, sizeof *g);
    if (!g) abort();
    snprintf(g->name, sizeof g->name, "%s", name);
    g->cap = cap;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    tl_device_ops_init(&g->ops);
    g->ops.describe = g_describe;
    g->ops.alloc = g_alloc;
    g->ops.dealloc = g_dealloc;
    g->ops.copy_to = g_copy_to;
    g->ops.copy_from = g_copy_from;
    g->ops.destroy = g_destroy;
    if (tl_device_create(&g->ops, g, &g->d) != TL_OK || tl_device_register(g->d) != TL_OK) {
        fprintf(stderr, "gatedev %s: %s\n", name, tl_last_error());
        abort();
    }
    return g;
}

tl_device *tu_gatedev_device(tu_gatedev *g) {
    return g->d;
}

void tu_gatedev_hold(tu_gatedev *g, unsigned n) {
    pthread_mutex_lock(&g->mu);
    g->hold = n;
    pthread_mutex_unlock(&g->mu);
}

void tu_gatedev_wait_held(tu_gatedev *g, unsigned n) {
    pthread_mutex_lock(&g->mu);
    while (g->waiting < n)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

void tu_gatedev_open(tu_gatedev *g) {
    pthread_mutex_lock(&g->mu);
    g->hold = 0;
    g->gate++;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

size_t tu_gatedev_log(tu_gatedev *g, tu_gatecopy *out, size_t cap) {
    pthread_mutex_lock(&g->mu);
    size_t n = g->n_log;
    if (out) memcpy(out, g->log, (n < cap ? n : cap) * sizeof *out);
    pthread_mutex_unlock(&g->mu);
    return n;
}

size_t tu_gatedev_copies(tu_gatedev *g) {
    return tu_gatedev_log(g, NULL, 0);
}

uint64_t tu_gatedev_used(tu_gatedev *g) {
    pthread_mutex_lock(&g->mu);
    uint64_t u = g->used;
    pthread_mutex_unlock(&g->mu);
    return u;
}

void tu_gatedev_remove(tu_gatedev *g) {
    tu_gatedev_open(g);
    tl_device *d = g->d;
    tl_device_unregister(d);
    tl_device_release(d); /* the last reference frees g */
}
