/*
 * pool.c — device memory as a few large buffers, sub-allocated.
 *
 * A device that hands out one buffer per allocation pays the backend's
 * allocation (and, on CUDA, a device-wide synchronisation at every free) per
 * tensor. A pool instead keeps chunks (buffers of at least a minimum size,
 * made by the caller) and carves allocations out of them first fit, aligned;
 * freeing only returns the range to its chunk. Empty chunks stay until the
 * caller trims them (when a new chunk would not fit, or at the end), so the
 * steady state of a streamed model allocates and frees nothing on the device.
 *
 * Bookkeeping only: the caller makes and frees the buffers and holds the lock.
 * Chunks are sorted by their first handle; each keeps its live allocations
 * sorted by offset, so free space is the gaps between them.
 */
#include "devices/pool.h"

#include "os/os.h"

#include <stdlib.h>
#include <string.h>

static uint64_t align_up(uint64_t v, uint64_t a) {
    return (v + a - 1) / a * a;
}

void tl__pool_init(tl__pool *pl, uint64_t align) {
    memset(pl, 0, sizeof *pl);
    pl->align = align ? align : 1;
}

void tl__pool_free(tl__pool *pl) {
    for (size_t i = 0; i < pl->n; i++)
        free(pl->c[i].a);
    free(pl->c);
    memset(pl, 0, sizeof *pl);
}

/* Index of the chunk whose handles hold p, or pl->n. */
static size_t chunk_of(const tl__pool *pl, tl_devptr p) {
    size_t lo = 0, hi = pl->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (pl->c[mid].p0 <= p)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!lo) return pl->n;
    const tl__pool_chunk *c = &pl->c[lo - 1];
    return p - c->p0 < c->size ? lo - 1 : pl->n;
}

/* First fit in chunk c: the offset, or UINT64_MAX. */
static uint64_t fit(const tl__pool *pl, const tl__pool_chunk *c, uint64_t size, size_t *at) {
    uint64_t start = 0;
    for (size_t i = 0; i <= c->n; i++) {
        uint64_t end = i < c->n ? c->a[i].off : c->size;
        uint64_t s = align_up(start, pl->align);
        if (s <= end && end - s >= size) {
            *at = i;
            return s;
        }
        if (i < c->n) start = c->a[i].off + c->a[i].len;
    }
    return UINT64_MAX;
}

int tl__pool_take(tl__pool *pl, uint64_t size, tl_devptr *out) {
    for (size_t k = 0; k < pl->n; k++) {
        tl__pool_chunk *c = &pl->c[k];
        size_t at;
        uint64_t off = fit(pl, c, size, &at);
        if (off == UINT64_MAX) continue;
        if (c->n == c->cap) {
            size_t nc = c->cap ? c->cap * 2 : 8;
            tl__pool_range *na = tl__os_realloc(c->a, nc * sizeof *na);
            if (!na) return -1;
            c->a = na;
            c->cap = nc;
        }
        memmove(c->a + at + 1, c->a + at, (c->n - at) * sizeof *c->a);
        c->a[at] = (tl__pool_range){off, size};
        c->n++;
        c->used += size;
        pl->used += size;
        *out = c->p0 + off;
        return 0;
    }
    return 1;
}

int tl__pool_add_chunk(tl__pool *pl, void *buf, char *base, uint64_t size, tl_devptr p0) {
    if (pl->n == pl->cap) {
        size_t nc = pl->cap ? pl->cap * 2 : 8;
        tl__pool_chunk *na = tl__os_realloc(pl->c, nc * sizeof *na);
        if (!na) return -1;
        pl->c = na;
        pl->cap = nc;
    }
    size_t at = 0;
    while (at < pl->n && pl->c[at].p0 < p0)
        at++;
    memmove(pl->c + at + 1, pl->c + at, (pl->n - at) * sizeof *pl->c);
    pl->c[at] = (tl__pool_chunk){.buf = buf, .base = base, .size = size, .p0 = p0};
    pl->n++;
    pl->total += size;
    return 0;
}

int64_t tl__pool_give(tl__pool *pl, tl_devptr p) {
    size_t k = chunk_of(pl, p);
    if (k == pl->n) return -1;
    tl__pool_chunk *c = &pl->c[k];
    uint64_t off = p - c->p0;
    for (size_t i = 0; i < c->n; i++)
        if (c->a[i].off == off) {
            uint64_t len = c->a[i].len;
            memmove(c->a + i, c->a + i + 1, (c->n - i - 1) * sizeof *c->a);
            c->n--;
            c->used -= len;
            pl->used -= len;
            return (int64_t)len;
        }
    return -1;
}

bool tl__pool_find(const tl__pool *pl, tl_devptr p, uint64_t n, void **buf, void **addr,
                   uint64_t *room) {
    size_t k = chunk_of(pl, p);
    if (k == pl->n) return false;
    const tl__pool_chunk *c = &pl->c[k];
    uint64_t off = p - c->p0;
    for (size_t i = 0; i < c->n; i++) {
        const tl__pool_range *r = &c->a[i];
        if (off >= r->off && off - r->off <= r->len && n <= r->len - (off - r->off)) {
            *buf = c->buf;
            *addr = c->base + off;
            if (room) *room = r->len - (off - r->off);
            return true;
        }
    }
    return false;
}

size_t tl__pool_trim(tl__pool *pl, void **bufs, size_t cap) {
    size_t w = 0, got = 0;
    for (size_t k = 0; k < pl->n; k++) {
        tl__pool_chunk *c = &pl->c[k];
        if (c->n == 0 && got < cap) {
            bufs[got++] = c->buf;
            pl->total -= c->size;
            free(c->a);
            continue;
        }
        pl->c[w++] = *c;
    }
    pl->n = w;
    return got;
}
