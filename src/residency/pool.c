/*
 * pool.c — one memory manager per device, shared by every session of the
 * process that places weights there (pool.h): membership, the device's total
 * budget for all sessions, eviction across sessions in one order, the
 * engine's reclaim callback, and the public tl_device_set_budget /
 * tl_device_make_room / tl_device_set_reclaim_callback.
 *
 * Pools live in a process-wide list keyed by device, each reference-counted
 * (its member sessions and calls in progress hold references); one without
 * members or settings goes when its last reference does.
 */
#include "residency/pool.h"

#include "core/error.h"
#include "os/os.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct member {
    tl_session *s;
    tl__os_cond *wake;
} member;

struct tlr_pool {
    tl_device *d;
    size_t refs;         /* under g_mu */
    struct tlr_pool *next; /* under g_mu */
    tl__os_mutex emu;    /* eviction for the pool: one at a time (see pool.h's lock order) */
    tl__os_mutex mu;     /* the state lock (a leaf): members and settings */
    member *m;
    size_t n_m, cap_m;
    tl_device_reclaim_fn reclaim;
    void *reclaim_user;
    _Atomic uint64_t used, total; /* total 0: no budget of the pool's own */
    _Atomic unsigned waiting;     /* acquires of members waiting for room here */
};

static tl__os_mutex g_mu = {.mu = PTHREAD_MUTEX_INITIALIZER};
static tlr_pool *g_pools;

bool tlr_victim_before(const tlr_victim *a, const tlr_victim *b) {
    if (a->priority != b->priority) return a->priority < b->priority;
    if (a->scheduled && b->scheduled && a->dist != b->dist) return a->dist > b->dist;
    return a->last_use < b->last_use;
}

/* The pool of d with a reference taken, made when create and there is none; NULL otherwise. */
static tlr_pool *pool_get(tl_device *d, bool create) {
    tl__os_mutex_lock(&g_mu);
    tlr_pool *p = g_pools;
    while (p && p->d != d)
        p = p->next;
    if (!p && create) {
        p = tl__os_calloc(1, sizeof *p);
        if (p) {
            p->d = d;
            tl_device_retain(d);
            tl__os_mutex_init(&p->emu);
            tl__os_mutex_init(&p->mu);
            p->next = g_pools;
            g_pools = p;
        }
    }
    if (p) p->refs++;
    tl__os_mutex_unlock(&g_mu);
    return p;
}

/* Drop a reference; the pool goes with the last one when it has no members and no settings. */
void tlr_pool_put(tlr_pool *p) {
    tl__os_mutex_lock(&g_mu);
    bool gone = false;
    if (--p->refs == 0) {
        tl__os_mutex_lock(&p->mu);
        gone = p->n_m == 0 && !p->reclaim && atomic_load(&p->total) == 0;
        tl__os_mutex_unlock(&p->mu);
        if (gone) {
            tlr_pool **pp = &g_pools;
            while (*pp != p)
                pp = &(*pp)->next;
            *pp = p->next;
        }
    }
    tl__os_mutex_unlock(&g_mu);
    if (!gone) return;
    tl_device_release(p->d);
    tl__os_mutex_destroy(&p->emu);
    tl__os_mutex_destroy(&p->mu);
    free(p->m);
    free(p);
}

tl_status tlr_pool_join(tl_device *d, tl_session *s, tl__os_cond *wake, tlr_pool **out) {
    *out = NULL;
    tlr_pool *p = pool_get(d, true);
    if (!p) return tl__err(TL_ERR_NOMEM, "session: out of memory");
    tl__os_mutex_lock(&p->mu);
    if (p->n_m == p->cap_m) {
        size_t nc = p->cap_m ? 2 * p->cap_m : 4;
        member *m = tl__os_realloc(p->m, nc * sizeof *m);
        if (!m) {
            tl__os_mutex_unlock(&p->mu);
            tlr_pool_put(p);
            return tl__err(TL_ERR_NOMEM, "session: out of memory");
        }
        p->m = m;
        p->cap_m = nc;
    }
    p->m[p->n_m++] = (member){s, wake};
    tl__os_mutex_unlock(&p->mu);
    *out = p; /* the member's reference */
    return TL_OK;
}

void tlr_pool_leave(tlr_pool *p, tl_session *s) {
    tl__os_mutex_lock(&p->emu); /* no eviction is choosing among the members meanwhile */
    tl__os_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->n_m; i++)
        if (p->m[i].s == s) {
            p->m[i] = p->m[--p->n_m];
            break;
        }
    tl__os_mutex_unlock(&p->mu);
    tl__os_mutex_unlock(&p->emu);
}

bool tlr_pool_take(tlr_pool *p, uint64_t n) {
    uint64_t used = atomic_load(&p->used);
    for (;;) {
        uint64_t total = atomic_load(&p->total);
        if (total && (used > total || n > total - used)) return false;
        if (atomic_compare_exchange_weak(&p->used, &used, used + n)) return true;
    }
}

void tlr_pool_waiting(tlr_pool *p, bool on) {
    if (on)
        atomic_fetch_add(&p->waiting, 1);
    else
        atomic_fetch_sub(&p->waiting, 1);
}

void tlr_pool_notify(tlr_pool *p) {
    if (!atomic_load(&p->waiting)) return;
    tl__os_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->n_m; i++)
        tl__os_cond_broadcast(p->m[i].wake);
    tl__os_mutex_unlock(&p->mu);
}

void tlr_pool_give(tlr_pool *p, uint64_t n) {
    atomic_fetch_sub(&p->used, n);
    tlr_pool_notify(p);
}

/* The reclaim callback of p (NULL: none), read under the state lock; *user its argument. */
static tl_device_reclaim_fn reclaim_of(tlr_pool *p, void **user) {
    tl__os_mutex_lock(&p->mu);
    tl_device_reclaim_fn fn = p->reclaim;
    *user = p->reclaim_user;
    tl__os_mutex_unlock(&p->mu);
    return fn;
}

bool tlr_pool_has_reclaim(tlr_pool *p) {
    void *user;
    return reclaim_of(p, &user) != NULL;
}

size_t tlr_pool_members(tlr_pool *p) {
    tl__os_mutex_lock(&p->mu);
    size_t n = p->n_m;
    tl__os_mutex_unlock(&p->mu);
    return n;
}

uint64_t tlr_pool_used(tlr_pool *p) {
    return atomic_load(&p->used);
}

uint64_t tlr_pool_total(tlr_pool *p) {
    return atomic_load(&p->total);
}

void tlr_pool_evict(tlr_pool *p, uint64_t bytes, bool ask_engine, uint64_t *freed,
                    uint64_t *reclaimed) {
    uint64_t got = 0;
    if (reclaimed) *reclaimed = 0;
    tl__os_mutex_lock(&p->emu);
    tl__os_mutex_lock(&p->mu);
    size_t n = p->n_m;
    tl_session **s = tl__os_malloc((n ? n : 1) * sizeof *s);
    for (size_t i = 0; s && i < n; i++)
        s[i] = p->m[i].s; /* members stay while emu is held (tlr_pool_leave takes it) */
    tl__os_mutex_unlock(&p->mu);
    unsigned misses = 0; /* evictions that freed nothing (a dirty unit that could not be saved) */
    while (s && got < bytes && misses < 4) {
        size_t best = n;
        tlr_victim bv = {0}, v;
        for (size_t i = 0; i < n; i++)
            if (tlr_session_victim(s[i], p->d, &v) && (best == n || tlr_victim_before(&v, &bv))) {
                best = i;
                bv = v;
            }
        if (best == n) break;
        uint64_t k = tlr_session_evict_one(s[best], p->d);
        if (!k) misses++;
        got += k;
    }
    free(s);
    tl__os_mutex_unlock(&p->emu);
    if (freed) *freed = got;
    if (got >= bytes || !ask_engine) return;
    void *user;
    tl_device_reclaim_fn fn = reclaim_of(p, &user);
    if (fn) { /* no lock held: the engine may call the library back */
        uint64_t r = fn(user, p->d, bytes - got);
        if (reclaimed) *reclaimed = r;
    }
}

/* --- the public calls --- */

tl_status tl_device_set_budget(tl_device *d, uint64_t bytes) {
    if (!d) return tl__err(TL_ERR_INVALID_ARG, "tl_device_set_budget: NULL device");
    tlr_pool *p = pool_get(d, true);
    if (!p) return tl__err(TL_ERR_NOMEM, "tl_device_set_budget: out of memory");
    atomic_store(&p->total, bytes);
    uint64_t used = atomic_load(&p->used);
    if (bytes && used > bytes) tlr_pool_evict(p, used - bytes, false, NULL, NULL);
    tlr_pool_put(p);
    return TL_OK;
}

tl_status tl_device_budget(tl_device *d, uint64_t *bytes, uint64_t *used) {
    if (!d) return tl__err(TL_ERR_INVALID_ARG, "tl_device_budget: NULL device");
    tlr_pool *p = pool_get(d, false);
    if (bytes) *bytes = p ? atomic_load(&p->total) : 0;
    if (used) *used = p ? atomic_load(&p->used) : 0;
    if (p) tlr_pool_put(p);
    return TL_OK;
}

tl_status tl_device_set_reclaim_callback(tl_device *d, tl_device_reclaim_fn fn, void *user) {
    if (!d) return tl__err(TL_ERR_INVALID_ARG, "tl_device_set_reclaim_callback: NULL device");
    tlr_pool *p = pool_get(d, true);
    if (!p) return tl__err(TL_ERR_NOMEM, "tl_device_set_reclaim_callback: out of memory");
    tl__os_mutex_lock(&p->mu);
    p->reclaim = fn;
    p->reclaim_user = fn ? user : NULL;
    tl__os_mutex_unlock(&p->mu);
    tlr_pool_put(p);
    return TL_OK;
}

/* Room on d now: what the device says is free, and what the pool's total leaves. */
static uint64_t room_now(tl_device *d, tlr_pool *p) {
    tl_device_info info;
    uint64_t room = tl_device_describe(d, &info, sizeof info) == TL_OK ? info.free : 0;
    if (p) {
        uint64_t total = atomic_load(&p->total), used = atomic_load(&p->used);
        if (total) {
            uint64_t left = used < total ? total - used : 0;
            if (left < room) room = left;
        }
    }
    return room;
}

uint64_t tlr_pool_room(tlr_pool *p) {
    return room_now(p->d, p);
}

tl_status tl_device_make_room(tl_device *d, uint64_t bytes, uint64_t *freed) {
    if (freed) *freed = 0;
    if (!d) return tl__err(TL_ERR_INVALID_ARG, "tl_device_make_room: NULL device");
    tlr_pool *p = pool_get(d, false);
    uint64_t room = room_now(d, p), got = 0, asked = 0;
    if (room < bytes) {
        if (p) {
            tlr_pool_evict(p, bytes - room, false, &got, NULL);
            room = room_now(d, p);
        }
        if (room < bytes) { /* the engine's own caches, last */
            void *user = NULL;
            tl_device_reclaim_fn fn = p ? reclaim_of(p, &user) : NULL;
            if (fn) {
                asked = bytes - room;
                fn(user, d, asked);
                room = room_now(d, p);
            }
        }
    }
    if (p) tlr_pool_put(p);
    if (freed) *freed = got;
    if (room >= bytes) return TL_OK;
    char a[32], f[32], g[32];
    return tl__err(TL_ERR_DEVICE_OOM,
                   "%s: asked for %s free, %s is after evicting %s of unreferenced weights%s",
                   tl_device_name(d), tl_fmt_bytes(bytes, a, sizeof a),
                   tl_fmt_bytes(room, f, sizeof f), tl_fmt_bytes(got, g, sizeof g),
                   asked ? " and asking the engine's reclaim callback" : "");
}
