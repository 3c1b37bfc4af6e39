/*
 * sim.c — simulated GPUs: a capacity-limited arena in host memory that
 * behaves like a device (see tierload.h for the rules).
 *
 * Handles live in the sim's own address space (from SIM_BASE, a range that is
 * never a user-space host address), 256-byte aligned, with a gap between
 * allocations and never reused, so a handle cannot be dereferenced, a copy
 * must stay inside one live allocation, and a stale handle is caught.
 * Capacity counts requested sizes exactly. Transfers advance a model clock
 * (latency + bytes / bandwidth each, queued on one stream). The bytes of an
 * asynchronous copy move when the copy completes on the model clock (on
 * wait, poll, advance, a later synchronous copy, or a free, which waits for
 * the queue like cudaFree), so a caller that reuses or reads a host buffer
 * before its ticket is done sees it go wrong here too.
 *
 * Host memory comes from one arena of the capacity (and 1/64 more for
 * alignment), reserved at the first allocation and sub-allocated first fit
 * (devices/pool.c): a page is faulted in and zeroed once per device, not
 * once per allocation, as a GPU's memory is there before anything is
 * allocated. An allocation the arena has no contiguous room for, or every
 * allocation where the arena cannot be reserved, is host memory of its own.
 * Copies of 2 MiB and more run on every core (os/team.c), as a GPU's copy
 * engines would not be held to one CPU's memcpy. A copy from a file's
 * mapping reads it under the SIGBUS guard (tl__sim_copy_to_mapped). While a
 * run checks, each 1 MiB leaf written whole is hashed as it lands, in cache
 * (tl__sim_hash_landing, tl__sim_landed_hash).
 */
#include "core/assert.h"
#include "core/checkhash.h"
#include "core/error.h"
#include "devices/devices.h"
#include "devices/pool.h"
#include "os/team.h"
#include "os/fault.h"
#include "os/guard.h"
#include "os/hostmem.h"
#include "os/os.h"
#include "os/thread.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIM_BASE 0xA100000000000000ull
#define SIM_ALIGN 256ull

typedef struct sim_alloc {
    uint64_t addr, size;
    unsigned char *mem;
    uint64_t *leaf;  /* the check's leaf hashes of the bytes as they landed (NULL: none), */
    uint8_t *landed; /* and which of them hold: the leaf was written whole since */
} sim_alloc;

typedef struct sim_pending {
    uint64_t ticket;
    double end;
    bool to_dev;
    uint64_t dp;        /* the device range's handle */
    bool guarded;       /* host may be a file's mapping (read under the SIGBUS guard) */
    unsigned char *dev; /* backing bytes of the device range */
    unsigned char *host;
    uint64_t n;
} sim_pending;

typedef struct sim {
    tl__os_mutex lock; /* guards everything below; *_locked functions need it held */
    tl_sim_spec spec;
    uint64_t used;
    tl__pool arena;          /* the arena's sub-allocations (handles: offsets + SIM_ALIGN) */
    unsigned char *arena_mem; /* NULL: not reserved (yet, or it cannot be) */
    uint64_t arena_len;
    bool arena_tried;
    int landing;      /* users of tl__sim_hash_landing: leaves are hashed as they land */
    uint64_t faulted; /* the first ticket whose mapping faulted, not yet reported (0: none) */
    tl__team *team; /* copies on every core (NULL: on the caller alone) */
    uint64_t next_addr;
    sim_alloc *allocs; /* sorted by addr */
    size_t n_allocs, cap_allocs;
    double clock;      /* model time now */
    double queue_end;  /* model time the stream becomes idle */
    uint64_t issued;   /* last ticket handed out */
    sim_pending *pend; /* FIFO of queued copies not yet done, [head, n) */
    size_t pend_head, pend_n, pend_cap;
} sim;

static const tl_device_ops sim_ops;
static void flush_locked(sim *s);

static tl_status sim_describe(void *self, tl_device_info *out) {
    sim *s = self;
    tl__os_mutex_lock(&s->lock);
    snprintf(out->name, sizeof out->name, "%s", s->spec.name);
    if (s->spec.bandwidth > 0)
        snprintf(out->desc, sizeof out->desc, "simulated GPU, %.3g GiB/s, %.3g us latency",
                 s->spec.bandwidth / 1073741824.0, s->spec.latency * 1e6);
    else
        snprintf(out->desc, sizeof out->desc, "simulated GPU");
    out->kind = TL_DEVICE_SIM;
    out->total = s->spec.capacity;
    out->free = s->spec.capacity - s->used;
    out->host_pointer = false;
    out->async = true;
    out->pinned = true; /* modelled: pinned host copies are copied from directly */
    out->alignment = SIM_ALIGN;
    tl__os_mutex_unlock(&s->lock);
    return TL_OK;
}

static bool in_arena(const sim *s, const unsigned char *mem) {
    return s->arena_mem && mem >= s->arena_mem && mem < s->arena_mem + s->arena_len;
}

/* Host memory for size bytes from the arena (reserved on the first call), or NULL. */
static unsigned char *arena_take_locked(sim *s, uint64_t size) {
    tl__os_mutex_assert_held(&s->lock);
    if (!s->arena_tried) {
        s->arena_tried = true;
        uint64_t want = s->spec.capacity + s->spec.capacity / 64 + SIM_ALIGN;
        void *mem;
        tl__pool_init(&s->arena, SIM_ALIGN);
        if (want > s->spec.capacity &&
            tl__os_anon_alloc(want, TL_OS_PAGES_KERNEL, &mem, &s->arena_len) == 0) {
            if (tl__pool_add_chunk(&s->arena, NULL, mem, s->arena_len, SIM_ALIGN) == 0)
                s->arena_mem = mem;
            else
                tl__os_anon_free(mem, s->arena_len);
        }
    }
    tl_devptr h;
    if (!s->arena_mem || size == 0 || tl__pool_take(&s->arena, size, &h) != 0) return NULL;
    return s->arena_mem + (h - SIM_ALIGN);
}

/* Give host memory of an allocation back: to the arena, or to the system. */
static void host_free_locked(sim *s, unsigned char *mem) {
    tl__os_mutex_assert_held(&s->lock);
    if (!in_arena(s, mem)) {
        free(mem);
        return;
    }
    int64_t n = tl__pool_give(&s->arena, (tl_devptr)(mem - s->arena_mem) + SIM_ALIGN);
    TL_ASSERT(n >= 0);
    (void)n;
}

static tl_status sim_alloc_fn(void *self, uint64_t size, tl_devptr *out) {
    sim *s = self;
    int e = tl__fault_hit(TL_FAULT_DEVICE_ALLOC);
    if (e)
        return tl__err(TL_ERR_DEVICE_OOM, "%s: cannot allocate %llu bytes: %s", s->spec.name,
                      (unsigned long long)size, tl__errno_text(e));
    tl__os_mutex_lock(&s->lock);
    uint64_t free_b = s->spec.capacity - s->used;
    if (size > free_b) {
        tl__os_mutex_unlock(&s->lock);
        return tl__err(TL_ERR_DEVICE_OOM,
                      "%s: out of memory: %llu bytes requested, %llu of %llu free", s->spec.name,
                      (unsigned long long)size, (unsigned long long)free_b,
                      (unsigned long long)s->spec.capacity);
    }
    uint64_t span = ((size + SIM_ALIGN - 1) & ~(SIM_ALIGN - 1)) + SIM_ALIGN; /* + guard gap */
    if (s->next_addr + span < s->next_addr || size > SIZE_MAX) {
        tl__os_mutex_unlock(&s->lock);
        return tl__err(TL_ERR_DEVICE_OOM, "%s: address space exhausted", s->spec.name);
    }
    if (s->n_allocs == s->cap_allocs) {
        size_t cap = s->cap_allocs ? s->cap_allocs * 2 : 16;
        sim_alloc *na = tl__os_realloc(s->allocs, cap * sizeof *na);
        if (!na) {
            tl__os_mutex_unlock(&s->lock);
            return tl__err(TL_ERR_NOMEM, "%s: host memory for the allocation table", s->spec.name);
        }
        s->allocs = na;
        s->cap_allocs = cap;
    }
    unsigned char *mem = arena_take_locked(s, size);
    if (!mem) mem = tl__os_malloc((size_t)size);
    if (!mem) {
        tl__os_mutex_unlock(&s->lock);
        return tl__err(TL_ERR_NOMEM, "%s: no host memory to back %llu simulated bytes", s->spec.name,
                      (unsigned long long)size);
    }
    sim_alloc *a = &s->allocs[s->n_allocs++];
    a->addr = s->next_addr;
    a->size = size;
    a->mem = mem;
    a->leaf = NULL;
    a->landed = NULL;
    s->next_addr += span;
    s->used += size;
    TL_ASSERT(s->used <= s->spec.capacity);
    *out = a->addr;
    tl__os_mutex_unlock(&s->lock);
    return TL_OK;
}

/* Index of the allocation containing p, or -1. */
static long find_alloc_locked(sim *s, uint64_t p) {
    tl__os_mutex_assert_held(&s->lock);
    size_t lo = 0, hi = s->n_allocs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->allocs[mid].addr <= p)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0) return -1;
    const sim_alloc *a = &s->allocs[lo - 1];
    return p - a->addr < a->size ? (long)(lo - 1) : -1;
}

static tl_status sim_dealloc(void *self, tl_devptr p) {
    sim *s = self;
    tl__os_mutex_lock(&s->lock);
    flush_locked(s); /* like cudaFree: queued copies finish first */
    long i = find_alloc_locked(s, p);
    if (i < 0 || s->allocs[i].addr != p) {
        tl__os_mutex_unlock(&s->lock);
        return tl__err(TL_ERR_INVALID_ARG, "%s: free of 0x%llx, which is not a live allocation",
                      s->spec.name, (unsigned long long)p);
    }
    TL_ASSERT(s->used >= s->allocs[i].size);
    s->used -= s->allocs[i].size;
    host_free_locked(s, s->allocs[i].mem);
    free(s->allocs[i].leaf);
    memmove(s->allocs + i, s->allocs + i + 1, (s->n_allocs - (size_t)i - 1) * sizeof *s->allocs);
    s->n_allocs--;
    tl__os_mutex_unlock(&s->lock);
    return TL_OK;
}

/* Host address of [p, p+n) inside one live allocation, or NULL. */
static unsigned char *resolve_locked(sim *s, uint64_t p, uint64_t n) {
    tl__os_mutex_assert_held(&s->lock);
    long i = find_alloc_locked(s, p);
    if (i < 0) return NULL;
    const sim_alloc *a = &s->allocs[i];
    uint64_t off = p - a->addr;
    if (n > a->size - off) return NULL;
    return a->mem + off;
}

#define SIM_PAR_MIN (2ull << 20) /* copies from this size run on the team */
#define SIM_PIECE (256ull << 10)

typedef struct par_copy {
    unsigned char *dst;
    const unsigned char *src;
    uint64_t n;
} par_copy;

static void copy_piece(void *arg, size_t i) {
    const par_copy *c = arg;
    uint64_t o = (uint64_t)i * SIM_PIECE, n = c->n - o < SIM_PIECE ? c->n - o : SIM_PIECE;
    memcpy(c->dst + o, c->src + o, (size_t)n);
}

static void move_bytes(sim *s, void *dst, const void *src, uint64_t n) {
    if (n < SIM_PAR_MIN || !s->team) {
        memcpy(dst, src, (size_t)n);
        return;
    }
    par_copy c = {dst, src, n};
    tl__team_run(s->team, (size_t)((n + SIM_PIECE - 1) / SIM_PIECE), copy_piece, &c);
}

/* A write into allocation a at off: pieces that are its leaves, hashed where whole. */
typedef struct land_job {
    sim_alloc *a;
    const unsigned char *src;
    uint64_t off, n;
    bool hash;
    bool guarded;         /* src may be a file's mapping: a SIGBUS is an error */
    _Atomic bool faulted; /* it was */
} land_job;

static void land_piece(void *arg, size_t i) {
    land_job *j = arg;
    uint64_t l = j->off / TL__CHECK_LEAF + i, lb = l * TL__CHECK_LEAF;
    uint64_t le = lb + TL__CHECK_LEAF < j->a->size ? lb + TL__CHECK_LEAF : j->a->size;
    uint64_t b = lb > j->off ? lb : j->off, e = le < j->off + j->n ? le : j->off + j->n;
    bool whole = b == lb && e == le;
    if (!j->guarded) {
        memcpy(j->a->mem + b, j->src + (b - j->off), (size_t)(e - b));
    } else if (tl__os_guarded_copy(j->a->mem + b, j->src + (b - j->off), (size_t)(e - b))) {
        atomic_store(&j->faulted, true);
        whole = false; /* the leaf's bytes are not what was asked for */
    }
    if (j->a->landed) j->a->landed[l] = j->hash && whole;
    if (j->hash && whole) j->a->leaf[l] = XXH3_64bits(j->a->mem + lb, (size_t)(le - lb));
}

/*
 * Write n bytes from src at handle dp (inside one live allocation): where the check asks for it
 * (landing), each leaf written whole is hashed while its bytes are in cache; any other write of
 * a leaf forgets its hash. guarded: src may be a file's mapping, read under the SIGBUS guard
 * (false when it faulted, the bytes then partly written).
 */
static bool write_dev_locked(sim *s, uint64_t dp, const void *src, uint64_t n, bool guarded) {
    tl__os_mutex_assert_held(&s->lock);
    long i = find_alloc_locked(s, dp);
    TL_ASSERT(i >= 0);
    sim_alloc *a = &s->allocs[i];
    uint64_t off = dp - a->addr;
    if (!n) return true;
    if (s->landing && !a->leaf) {
        size_t nl = (size_t)((a->size + TL__CHECK_LEAF - 1) / TL__CHECK_LEAF);
        a->leaf = tl__os_realloc_optional(NULL, nl * (sizeof *a->leaf + 1)); /* a cache */
        if (a->leaf) {
            a->landed = (uint8_t *)(a->leaf + nl);
            memset(a->landed, 0, nl);
        }
    }
    if (!a->leaf && !guarded) {
        move_bytes(s, a->mem + off, src, n);
        return true;
    }
    land_job j = {a, src, off, n, s->landing > 0 && a->leaf, guarded, false};
    size_t pieces = (size_t)((off + n - 1) / TL__CHECK_LEAF - off / TL__CHECK_LEAF + 1);
    if (n >= SIM_PAR_MIN && s->team)
        tl__team_run(s->team, pieces, land_piece, &j);
    else
        for (size_t k = 0; k < pieces; k++)
            land_piece(&j, k);
    return !atomic_load(&j.faulted);
}

/* Complete queued copies whose modeled end has passed, in order. */
static void retire_locked(sim *s) {
    tl__os_mutex_assert_held(&s->lock);
    TL_ASSERT(s->pend_head <= s->pend_n && s->pend_n <= s->pend_cap);
    while (s->pend_head < s->pend_n && s->pend[s->pend_head].end <= s->clock) {
        const sim_pending *q = &s->pend[s->pend_head++];
        if (!q->to_dev)
            move_bytes(s, q->host, q->dev, q->n);
        else if (!write_dev_locked(s, q->dp, q->host, q->n, q->guarded) && !s->faulted)
            s->faulted = q->ticket;
    }
    if (s->pend_head == s->pend_n) s->pend_head = s->pend_n = 0;
}

/* Wait for the whole queue. */
static void flush_locked(sim *s) {
    tl__os_mutex_assert_held(&s->lock);
    if (s->queue_end > s->clock) s->clock = s->queue_end;
    retire_locked(s);
}

static double duration(const sim *s, uint64_t n) {
    return s->spec.latency + (s->spec.bandwidth > 0 ? (double)n / s->spec.bandwidth : 0.0);
}

/* Move bytes and account the model time; ticket NULL = synchronous. */
static tl_status transfer_locked(sim *s, bool to_dev, uint64_t dp, void *hp, uint64_t n,
                                 uint64_t *ticket, bool guarded) {
    tl__os_mutex_assert_held(&s->lock);
    unsigned char *m = resolve_locked(s, dp, n);
    if (!m)
        return tl__err(TL_ERR_INVALID_ARG,
                      "%s: copy of %llu bytes at 0x%llx is not inside one live allocation",
                      s->spec.name, (unsigned long long)n, (unsigned long long)dp);
    if (ticket && s->pend_n == s->pend_cap) {
        if (s->pend_head > 0) {
            memmove(s->pend, s->pend + s->pend_head, (s->pend_n - s->pend_head) * sizeof *s->pend);
            s->pend_n -= s->pend_head;
            s->pend_head = 0;
        } else {
            size_t cap = s->pend_cap ? s->pend_cap * 2 : 16;
            sim_pending *np = tl__os_realloc(s->pend, cap * sizeof *np);
            if (!np)
                return tl__err(TL_ERR_NOMEM, "%s: host memory for the copy queue", s->spec.name);
            s->pend = np;
            s->pend_cap = cap;
        }
    }
    double start = s->clock > s->queue_end ? s->clock : s->queue_end;
    double end = start + duration(s, n);
    bool landed = true;
    s->queue_end = end;
    if (ticket) {
        sim_pending *q = &s->pend[s->pend_n++];
        *ticket = ++s->issued;
        q->ticket = *ticket;
        q->end = end;
        q->to_dev = to_dev;
        q->dp = dp;
        q->guarded = guarded;
        q->dev = m;
        q->host = hp;
        q->n = n;
    } else {
        s->clock = end;
        retire_locked(s); /* everything queued before ends by start */
        if (!to_dev)
            move_bytes(s, hp, m, n);
        else
            landed = write_dev_locked(s, dp, hp, n, guarded);
    }
    retire_locked(s);
    return landed ? TL_OK : TL_ERR_CHANGED; /* a fault in the mapping: the caller words it */
}

static tl_status sim_copy_to(void *self, tl_devptr dst, const void *src, uint64_t n) {
    sim *s = self;
    tl__os_mutex_lock(&s->lock);
    tl_status st = transfer_locked(s, true, dst, (void *)src, n, NULL, false);
    tl__os_mutex_unlock(&s->lock);
    return st;
}

static tl_status sim_copy_from(void *self, void *dst, tl_devptr src, uint64_t n) {
    sim *s = self;
    tl__os_mutex_lock(&s->lock);
    tl_status st = transfer_locked(s, false, src, dst, n, NULL, false);
    tl__os_mutex_unlock(&s->lock);
    return st;
}

static tl_status sim_copy_to_async(void *self, tl_devptr dst, const void *src, uint64_t n,
                                   uint64_t *ticket) {
    sim *s = self;
    tl__os_mutex_lock(&s->lock);
    tl_status st = transfer_locked(s, true, dst, (void *)src, n, ticket, false);
    tl__os_mutex_unlock(&s->lock);
    return st;
}

static tl_status sim_copy_from_async(void *self, void *dst, tl_devptr src, uint64_t n,
                                     uint64_t *ticket) {
    sim *s = self;
    tl__os_mutex_lock(&s->lock);
    tl_status st = transfer_locked(s, false, src, dst, n, ticket, false);
    tl__os_mutex_unlock(&s->lock);
    return st;
}

/* A copy up to ticket (done) whose mapping faulted, reported once. */
static tl_status fault_status_locked(sim *s, uint64_t ticket) {
    tl__os_mutex_assert_held(&s->lock);
    if (!s->faulted || s->faulted > ticket) return TL_OK;
    uint64_t t = s->faulted;
    s->faulted = 0;
    return tl__err(TL_ERR_CHANGED, "%s: copy %llu: its source, a file's mapping, shrank under it",
                   s->spec.name, (unsigned long long)t);
}

static tl_status sim_wait(void *self, uint64_t ticket) {
    sim *s = self;
    tl__os_mutex_lock(&s->lock);
    if (ticket > s->issued) {
        tl__os_mutex_unlock(&s->lock);
        return tl__err(TL_ERR_INVALID_ARG, "%s: wait on ticket %llu, never issued", s->spec.name,
                      (unsigned long long)ticket);
    }
    for (size_t i = s->pend_head; i < s->pend_n && s->pend[i].ticket <= ticket; i++)
        if (s->pend[i].end > s->clock) s->clock = s->pend[i].end;
    retire_locked(s);
    tl_status st = fault_status_locked(s, ticket);
    tl__os_mutex_unlock(&s->lock);
    return st;
}

static tl_status sim_poll(void *self, uint64_t ticket, bool *done) {
    sim *s = self;
    tl__os_mutex_lock(&s->lock);
    if (ticket > s->issued) {
        tl__os_mutex_unlock(&s->lock);
        return tl__err(TL_ERR_INVALID_ARG, "%s: poll of ticket %llu, never issued", s->spec.name,
                      (unsigned long long)ticket);
    }
    retire_locked(s);
    *done = s->pend_head == s->pend_n || ticket < s->pend[s->pend_head].ticket;
    tl_status st = *done ? fault_status_locked(s, ticket) : TL_OK;
    tl__os_mutex_unlock(&s->lock);
    return st;
}

static void sim_destroy(void *self) {
    sim *s = self;
    for (size_t i = 0; i < s->n_allocs; i++) {
        if (!in_arena(s, s->allocs[i].mem)) free(s->allocs[i].mem);
        free(s->allocs[i].leaf);
    }
    tl__pool_free(&s->arena);
    if (s->arena_mem) tl__os_anon_free(s->arena_mem, s->arena_len);
    tl__team_destroy(s->team);
    free(s->allocs);
    free(s->pend);
    tl__os_mutex_destroy(&s->lock);
    free(s);
}

static const tl_device_ops sim_ops = {
    .size = sizeof(tl_device_ops),
    .describe = sim_describe,
    .alloc = sim_alloc_fn,
    .dealloc = sim_dealloc,
    .copy_to = sim_copy_to,
    .copy_from = sim_copy_from,
    .copy_to_async = sim_copy_to_async,
    .copy_from_async = sim_copy_from_async,
    .wait = sim_wait,
    .poll = sim_poll,
    .destroy = sim_destroy,
};

tl_status tl_device_sim_create(const tl_sim_spec *spec, tl_device **out) {
    if (!spec || !out) return tl__err(TL_ERR_INVALID_ARG, "tl_device_sim_create: NULL argument");
    *out = NULL;
    if (!tl__device_name_ok(spec->name))
        return tl__err(TL_ERR_INVALID_ARG, "sim: invalid device name '%.*s'", TL_DEVICE_NAME_MAX - 1,
                      spec->name);
    if (!(spec->bandwidth >= 0) || !(spec->latency >= 0))
        return tl__err(TL_ERR_INVALID_ARG, "%s: bandwidth and latency must be >= 0", spec->name);
    sim *s = tl__os_calloc(1, sizeof *s);
    if (!s) return tl__err(TL_ERR_NOMEM, "%s: out of memory", spec->name);
    int e = tl__os_mutex_init(&s->lock);
    if (e) {
        free(s);
        return tl__err(TL_ERR_NOMEM, "%s: cannot make a mutex: %s", spec->name, tl__errno_text(e));
    }
    s->spec = *spec;
    s->next_addr = SIM_BASE;
    s->team = tl__team_create(tl__team_default_helpers());
    tl_status st = tl_device_create(&sim_ops, s, out);
    if (st != TL_OK) sim_destroy(s);
    return st;
}

tl_status tl_device_sim_add(const char *spec) {
    tl_sim_spec specs[64];
    tl_device *devs[64];
    size_t n = 0, made = 0, reg = 0;
    tl_status st = tl_parse_sim_spec(spec, specs, 64, &n);
    for (; st == TL_OK && made < n; made++)
        st = tl_device_sim_create(&specs[made], &devs[made]);
    if (st != TL_OK && made > 0) made--; /* the failing one made nothing */
    for (; st == TL_OK && reg < made; reg++)
        st = tl_device_register(devs[reg]);
    if (st != TL_OK) {
        if (reg > 0) reg--;
        for (size_t i = 0; i < reg; i++)
            tl_device_unregister(devs[i]);
    }
    for (size_t i = 0; i < made; i++)
        tl_device_release(devs[i]);
    return st;
}

static sim *as_sim(tl_device *d) {
    return d && d->ops == &sim_ops ? d->self : NULL;
}

const void *tl__sim_read_in_place(tl_device *d, tl_devptr p, uint64_t n) {
    sim *s = as_sim(d);
    if (!s || !n) return NULL;
    tl__os_mutex_lock(&s->lock);
    unsigned char *m = resolve_locked(s, p, n);
    if (m) { /* the model time of a synchronous copy back: after the queue, for its bytes */
        double start = s->clock > s->queue_end ? s->clock : s->queue_end;
        s->clock = s->queue_end = start + duration(s, n);
        retire_locked(s);
    }
    tl__os_mutex_unlock(&s->lock);
    return m;
}

tl_status tl__sim_copy_to_mapped(tl_device *d, tl_devptr dst, const void *src, uint64_t n,
                                 uint64_t *ticket) {
    sim *s = as_sim(d);
    if (!s) return TL_ERR_UNSUPPORTED;
    tl__os_mutex_lock(&s->lock);
    tl_status st = transfer_locked(s, true, dst, (void *)src, n, ticket, true);
    tl__os_mutex_unlock(&s->lock);
    return st;
}

void tl__sim_hash_landing(tl_device *d, bool on) {
    sim *s = as_sim(d);
    if (!s) return;
    tl__os_mutex_lock(&s->lock);
    s->landing += on ? 1 : -1;
    TL_ASSERT(s->landing >= 0);
    tl__os_mutex_unlock(&s->lock);
}

bool tl__sim_landed_hash(tl_device *d, tl_devptr p, uint64_t n, uint64_t *out) {
    sim *s = as_sim(d);
    if (!s || !n) return false;
    tl__os_mutex_lock(&s->lock);
    flush_locked(s); /* the queue's copies land first, as for a copy back */
    long i = find_alloc_locked(s, p);
    const sim_alloc *a = i >= 0 ? &s->allocs[i] : NULL;
    bool ok = a && a->addr == p && a->size == n && a->leaf;
    size_t nl = (size_t)((n + TL__CHECK_LEAF - 1) / TL__CHECK_LEAF);
    for (size_t k = 0; ok && k < nl; k++)
        ok = a->landed[k];
    if (ok) { /* the model time of a synchronous copy back, as tl__sim_read_in_place */
        *out = tl__check_root(a->leaf, nl);
        double start = s->clock > s->queue_end ? s->clock : s->queue_end;
        s->clock = s->queue_end = start + duration(s, n);
        retire_locked(s);
    }
    tl__os_mutex_unlock(&s->lock);
    return ok;
}

tl_status tl_device_sim_clock(tl_device *d, double *seconds) {
    sim *s = as_sim(d);
    if (!s || !seconds) return tl__err(TL_ERR_INVALID_ARG, "tl_device_sim_clock: not a sim device");
    tl__os_mutex_lock(&s->lock);
    *seconds = s->clock;
    tl__os_mutex_unlock(&s->lock);
    return TL_OK;
}

tl_status tl_device_sim_advance(tl_device *d, double seconds) {
    sim *s = as_sim(d);
    if (!s) return tl__err(TL_ERR_INVALID_ARG, "tl_device_sim_advance: not a sim device");
    if (!(seconds >= 0))
        return tl__err(TL_ERR_INVALID_ARG, "%s: advance by %g s", s->spec.name, seconds);
    tl__os_mutex_lock(&s->lock);
    s->clock += seconds;
    retire_locked(s);
    tl__os_mutex_unlock(&s->lock);
    return TL_OK;
}
