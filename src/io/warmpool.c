/*
 * warmpool.c — the warm host pool (tl_warm_pool_set, tl_warm_pool_stats).
 *
 * Loading into fresh anonymous memory pays page faults and zeroing for
 * every page, most of a warm copy load. A process that frees one model and
 * loads the next (a server switching checkpoints) can instead keep the
 * freed destination, still faulted in, and read the next model's bytes
 * straight over the old ones. The pool is a short list of such regions
 * (at most TL_WARM_MAX_REGIONS), held under one mutex:
 *   - give: a region is kept when it is large (TL_WARM_MIN_REGION: small
 *     ones would push large ones out of the short list for little gain)
 *     and alone within the bound; the oldest
 *     regions are unmapped until it fits beside the rest. Unless its owner
 *     knows every page was written (a completed load), it is faulted in
 *     whole first (MADV_POPULATE_WRITE), so a region in the pool never
 *     faults. What is beyond
 *     the bound is unmapped at once: the system gets it back for certain,
 *     which MADV_FREE / MADV_COLD would leave to its reclaim.
 *   - take: best fit, the smallest region at least as large as asked. A
 *     larger region is split at the first 2 MiB boundary past the size
 *     asked (a huge page is never split) and the rest stays in the pool as
 *     a region of its own, for the next file of the same load or the next
 *     load (a 1.5 GiB region taken whole for a 40 MiB file would tie up the
 *     rest for as long as that load lives); a rest under
 *     TL_WARM_MIN_REGION goes with the region whole.
 * munmap and the faulting-in run outside the lock.
 */
#include "core/outsize.h"
#include "io/warmpool.h"
#include "os/hostmem.h"
#include "os/os.h"
#include "tierload.h"

#include <pthread.h>

#define TL_WARM_MAX_REGIONS 16
#define HUGE_SZ (2ull << 20)
/* Large buffers only: smaller regions are unmapped on give, and a smaller rest goes with a take. */
#define TL_WARM_MIN_REGION (4ull << 20)

typedef struct region {
    unsigned char *addr;
    uint64_t len;
} region;

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static region pool[TL_WARM_MAX_REGIONS]; /* oldest first */
static size_t pool_n;
static tl_warm_stats pool_st; /* held and regions mirror pool[] */

static void drop_at(size_t i) {
    pool_st.held -= pool[i].len;
    for (size_t k = i + 1; k < pool_n; k++)
        pool[k - 1] = pool[k];
    pool_n--;
    pool_st.regions = pool_n;
}

/* Move the oldest regions out until room bytes fit beside the rest; into out[]. */
static size_t evict_locked(uint64_t room, bool slot, region *out) {
    size_t n = 0;
    while (pool_n &&
           (pool_st.held + room > pool_st.bound || (slot && pool_n >= TL_WARM_MAX_REGIONS))) {
        out[n++] = pool[0];
        pool_st.released += pool[0].len;
        drop_at(0);
    }
    return n;
}

static void unmap_all(const region *r, size_t n) {
    for (size_t i = 0; i < n; i++)
        tl__os_anon_free(r[i].addr, r[i].len);
}

void tl_warm_pool_set(uint64_t bound) {
    region out[TL_WARM_MAX_REGIONS];
    pthread_mutex_lock(&pool_mu);
    pool_st.bound = bound;
    size_t n = evict_locked(0, false, out);
    pthread_mutex_unlock(&pool_mu);
    unmap_all(out, n);
}

void tl_warm_pool_stats(tl_warm_stats *out, size_t out_size) {
    if (!out) return;
    pthread_mutex_lock(&pool_mu);
    tl__copy_out(out, out_size, &pool_st, sizeof pool_st);
    pthread_mutex_unlock(&pool_mu);
}

bool tl__warm_take(uint64_t size, void **addr, uint64_t *len) {
    uint64_t ps = tl__os_page_size();
    if (size == 0) size = 1;
    size = (size + ps - 1) / ps * ps;
    pthread_mutex_lock(&pool_mu);
    size_t best = pool_n;
    for (size_t i = 0; i < pool_n; i++)
        if (pool[i].len >= size && (best == pool_n || pool[i].len < pool[best].len)) best = i;
    if (best == pool_n) {
        pthread_mutex_unlock(&pool_mu);
        return false;
    }
    region r = pool[best];
    /* split at the first 2 MiB boundary (of the address) at or past the size asked */
    uintptr_t cut = ((uintptr_t)r.addr + size + HUGE_SZ - 1) & ~(uintptr_t)(HUGE_SZ - 1);
    if (cut - (uintptr_t)r.addr + TL_WARM_MIN_REGION <= r.len) {
        uint64_t used = (uint64_t)(cut - (uintptr_t)r.addr);
        pool[best].addr = (unsigned char *)cut;
        pool[best].len = r.len - used;
        pool_st.held -= used;
        r.len = used;
    } else {
        drop_at(best);
    }
    pool_st.taken += r.len;
    pool_st.takes++;
    pthread_mutex_unlock(&pool_mu);
    *addr = r.addr;
    *len = r.len;
    return true;
}

void tl__warm_give(void *addr, uint64_t len, bool faulted) {
    if (!addr || !len) return;
    pthread_mutex_lock(&pool_mu);
    bool fits = len <= pool_st.bound && len >= TL_WARM_MIN_REGION;
    if (!fits) pool_st.released += len;
    pthread_mutex_unlock(&pool_mu);
    if (!fits) {
        tl__os_anon_free(addr, len);
        return;
    }
    /* every page in the pool is faulted in (a hint: without it the next load faults them) */
    if (!faulted) tl__os_populate_write(addr, len);
    region out[TL_WARM_MAX_REGIONS + 1];
    pthread_mutex_lock(&pool_mu);
    size_t n = 0;
    if (len > pool_st.bound) { /* the bound shrank meanwhile */
        out[n++] = (region){addr, len};
        pool_st.released += len;
    } else {
        n = evict_locked(len, true, out);
        pool[pool_n++] = (region){addr, len};
        pool_st.held += len;
        pool_st.regions = pool_n;
        if (pool_st.held > pool_st.held_peak) pool_st.held_peak = pool_st.held;
    }
    pthread_mutex_unlock(&pool_mu);
    unmap_all(out, n);
}
