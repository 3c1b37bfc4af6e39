/*
 * session.c — the residency manager: a plan carried out over time.
 *
 * State per unit (a tensor, or one row block of a row-split tensor): the
 * device it belongs on (from placement.c), whether its bytes are on that
 * device now (or being loaded there), where its truth lives otherwise (the
 * file's mapping; a RAM copy; a spill extent), whether the device copy is
 * dirty (written there and nowhere else), a reference count and the logical
 * time of its last use.
 *
 * Each device keeps its evictable units in eviction order (two intrusive
 * lists without a schedule, a heap with one; see "eviction order" below), so
 * choosing a victim, an acquire and a release cost no pass over all units.
 *
 * Invariants (tl_session_check verifies them; TL_ASSERT-style checks run in
 * the tests after every operation):
 *   - per device, used == the sum of the lengths of units on it or loading
 *     to it, and used <= budget after every public call;
 *   - host_used == the sum of RAM copies, <= host_budget;
 *   - a unit with refs > 0 or loading is never evicted;
 *   - a dirty unit is never dropped: it goes to RAM or the spill file first,
 *     and if that fails it stays where it is.
 *   - a device's lists or heap hold exactly its evictable units (on it, not
 *     loading, unreferenced), in order, their bytes counted in evictable.
 *
 * Locking: one mutex (mu) guards all state; functions named *_locked expect
 * it held. Loads run on the mover engine with the lock released (units are
 * marked loading, which pins them and their budget); evictions of dirty
 * units write their bytes with the lock held (they are rare: only what an
 * engine wrote on a device). Prefetch batches complete on engine workers,
 * whose callback takes the lock.
 */
#include "residency/residency.h"
#include "residency/pool.h"

#include "core/assert.h"
#include "core/env.h"
#include "core/error.h"
#include "core/outsize.h"
#include "core/options.h"
#include "io/io.h"
#include "os/hostmem.h"
#include "io/warmpool.h"
#include "os/os.h"
#include "os/thread.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define SPILL_ALIGN 4096ull
#define POOL_TRIES 16u /* evictions across sessions one acquire asks before it waits or fails */
#define DEFAULT_EVENT_CAP 65536u
#define LOOP_COPIES 3        /* copies of a repeating pass in the schedule: 2+ passes of lookahead */
#define LEARN_MAX_STEPS 65536u /* steps recorded while learning before giving up */
#define LEARN_SEGS 8           /* passes kept to find the period in */
#define LEARN_PERIOD 4         /* the longest period looked for, in passes */

/* A fence given at a release: waited once, before memory of the units holding it is reused. */
typedef struct fence {
    tl_fence_wait_fn wait;
    void *arg;
    size_t holders; /* units still holding it */
    bool waited;
} fence;

typedef struct unit {
    tlr_place pl; /* off and len: bytes of the tensor as the session keeps it (x.to) */
    tlr_xunit x;  /* the type it is kept in, and the file bytes it is made from */
    bool produced;       /* made from the file's bytes by the session's producer (at-load LoRA) */
    uint32_t seen_epoch; /* its tensor's epoch when it last loaded (UINT32_MAX: never loaded) */
    int32_t dev; /* session device, TLR_HOST for the host */
    size_t group;
    /* state */
    bool on_dev, loading, dirty;
    bool prefetched; /* loaded by a prefetch and not acquired since */
    tl_devptr dptr;
    uint64_t ticket;
    void *ram; /* RAM copy (anonymous), ram_len mapped */
    uint64_t ram_len;
    void *pin; /* pinned host copy (clean: the file's bytes), pin_len mapped */
    uint64_t pin_len;
    bool pin_valid; /* filled (a load fills it alongside its first upload) */
    void *sp_map;   /* spill extent, mapped read-only */
    uint64_t sp_off, sp_len;
    uint32_t refs;
    uint32_t busy; /* its bytes are being changed (tl_session_update_begin): acquires wait */
    uint64_t last_use;
    /* eviction order: IN_HEAP (its place in hp[]), IN_LIST or NOT_EVICTABLE; with a
       schedule, its next use when it went there (kept current as the schedule advances);
       without, its neighbours in its device's list (NOT_EVICTABLE: none) */
    size_t hpos, nu, lprev, lnext;
    fence *fence; /* device work that may still read the unit (tl_session_release_fenced) */
} unit;

/* A group of tensors (tl_session_group, or a set acquired): a step by its index. */
typedef struct sgroup {
    char *name;       /* NULL: none given */
    size_t *tensors;  /* in the order first given, each once */
    size_t *sorted;   /* the same, ascending: what makes two groups the same */
    size_t n;
    uint64_t key;     /* a hash of sorted */
} sgroup;

/* An acquire waiting for room (on its own stack), queued in arrival order. */
typedef struct room_waiter {
    struct room_waiter *next;
} room_waiter;

/* An acquire's load batch in flight (on its own stack), for tl_session_cancel. */
typedef struct demand {
    tl__io_batch *b;
    struct demand *next;
} demand;

/* A heap entry: a unit and its keys (copied, so that the heap's work stays in its array). */
typedef struct hent {
    size_t nu;
    uint64_t last_use;
    size_t k;
} hent;

typedef struct sdev {
    tl_device *d;
    uint32_t plan_index;
    uint64_t budget, used, peak;
    bool host_ptr, sim, async, pinned;
    /* its evictable units (on it, not loading, unreferenced), n_heap of them: with a
       schedule in a heap, the next victim on top; without, in two lists (streamed units,
       resident units), each in eviction order */
    struct hent *heap;
    size_t n_heap;
    size_t lhead[2], ltail[2];
    uint64_t evictable; /* their bytes */
    tlr_pool *pool;     /* the device's memory manager, shared with the process's other sessions */
    uint64_t base;      /* the session's budget there for weights and compute (budget: less the reserve) */
} sdev;

#define NOT_EVICTABLE ((size_t)-1)
#define IN_LIST ((size_t)-2)
#define IN_HEAP ((size_t)-3)

typedef struct extent {
    uint64_t off, len;
} extent;

/* A prefetch batch in flight; done and err are written by its completion under pmu. */
typedef struct pending {
    tl_session *s;
    tl__io_batch *b;
    size_t *units;
    size_t n;
    bool done;
    tl_status err;
    char errmsg[256];
    struct pending *next;
} pending;

struct tl_session {
    tl_model *m;
    const tl_plan *p;
    tl_session_options o;
    tl__type_rules types; /* o.type_rules, parsed */
    char *spill_dir;
    tl__os_mutex mu;
    /* prefetch completions: engine workers never take mu, only pmu */
    tl__os_mutex pmu;
    tl__os_cond pcv;
    uint64_t pgen;
    tl__os_cond bcv; /* with mu: an update ended (busy units are free again) */
    tl__os_cond rcv; /* with mu: room may have come free (a release, a load finished) */
    struct room_waiter *wq_head, *wq_tail; /* acquires waiting for room, in arrival order */
    _Atomic uint64_t cancel_gen; /* tl_session_cancel calls: an acquire cancels on a change */
    demand *demands;             /* with mu: acquires' load batches in flight */
    tl__io_engine *io;
    sdev dev[TL_PLAN_MAX_DEVICES];
    size_t n_dev;
    int32_t plan2dev[TL_PLAN_MAX_DEVICES];
    unit *u;
    size_t n_u;
    size_t *first; /* per tensor: its first unit; first[n_tensors] = n_u */
    tl_tensor_info *xinfo; /* per tensor kept converted: its info as kept (name NULL: not) */
    uint32_t *epoch;       /* per tensor: tl_session_update_begin calls on it */
    tlr_producer prod;     /* an at-load LoRA set (prod.rows NULL: none) */
    tlr_groups groups;
    _Atomic int priority;                 /* tl_session_set_priority */
    uint64_t comp_reserve[TL_COMP_COUNT]; /* compute reserve per component (tl_session_set_reserve) */
    uint64_t comp_devs[TL_COMP_COUNT];    /* per component: the plan devices it is placed on (bits) */
    bool prefetching; /* a prefetch was ever asked for: demand loads count as misses */
    /* schedule */
    tl_session_step *steps;
    size_t n_steps, pos;
    /* a repeating pass (learned or declared): steps holds LOOP_COPIES copies of it, and pos is
     * brought back into the first copy as each pass ends */
    tl_session_step *pass;
    size_t n_pass;
    bool learn;               /* recording acquires (see learn_locked) */
    tl_session_step *rec;     /* what was recorded */
    size_t n_rec, cap_rec;
    size_t cand, cand_end;    /* a candidate pass rec[cand..cand_end), SIZE_MAX: none */
    bool bound;               /* a pass was found: passes start with the steps b0, b1 */
    tl_session_step b0, b1;
    size_t seg[LEARN_SEGS + 1]; /* starts of the passes kept in rec, the current one last */
    size_t n_seg;               /* complete passes in rec */
    size_t **uses, *n_uses;  /* per group: step indices */
    size_t uses_ng;          /* the groups uses was made for */
    sgroup *gv;              /* groups of tensors, steps by index (tl_session_group) */
    size_t n_gv;
    bool furthest;           /* victims by furthest next use (a schedule, policy not LRU) */
    size_t *gfirst, *gunits; /* per group g: its units gunits[gfirst[g], gfirst[g + 1]) */
    size_t gfirst_cap;
    size_t *hp; /* per unit in a heap: its place there (apart from the units: fewer cache misses) */
    /* host copies and spill */
    uint64_t host_budget;
    int spill_fd;
    uint64_t spill_end;
    extent *free_ext;
    size_t n_free, cap_free;
    pending *pend;
    tl_session_stats st;
    /*
     * The event log: a ring of at most ev_cap entries (allocated as it fills)
     * keeping the newest. Entry numbers count from 0 at creation; n_ev are
     * kept, numbered ev_next - n_ev on, the oldest at slot ev_head.
     */
    tl_session_event *ev;
    size_t n_ev, alloc_ev, ev_cap, ev_head;
    uint64_t ev_next, ev_dropped; /* the next entry's number; entries pushed out or lost */
    double t0;
    /* handles: the sets handed out and not released, and acquires still building one */
    uint64_t serial;   /* unique in the process: a set names its session by it */
    tl_acquired *sets; /* outstanding sets (doubly linked through prev/next) */
    size_t n_sets;
    size_t acquiring;        /* acquires holding references without a set yet */
    uint64_t acquiring_refs; /* the references they hold */
    /* victim choices timed (tl__session_victim_timing): for the bench's share of CPU */
    bool time_victims;
    double timer_cost, timer_min; /* seconds a reading of the clock costs: mean, least */
    double victim_t;              /* seconds in the eviction order (timers' cost taken out) */
    uint64_t victim_choices, victim_timed, victim_dropped; /* choices; intervals; preempted */
};

static void heap_sync_locked(tl_session *s, unit *u);
static void shrink_locked(tl_session *s, int32_t d);

/* The process-wide clock of uses: least recently used compares across sessions. */
static _Atomic uint64_t g_clock;
static uint64_t use_tick(void) {
    return atomic_fetch_add(&g_clock, 1) + 1;
}

/*
 * --- handles (process-wide) ---
 *
 * A set is released by pointer, so its pointer must stay meaningful after
 * the release: set headers are never given back to the heap. A released
 * header waits in a FIFO and is reused only once SET_QUARANTINE others wait
 * behind it, so a second release of the same pointer finds it not live (and
 * a new set at the same address only after that many acquires). Sessions are
 * registered while they live: a release through a destroyed session, or
 * through a session other than the set's, is refused without touching it.
 * g_mu is never held while a session's mu is taken.
 */
#define SET_QUARANTINE 1024u

static tl__os_mutex g_mu = {.mu = PTHREAD_MUTEX_INITIALIZER};
static uint64_t g_serial;
static tl_session **g_live;
static size_t g_n_live, g_cap_live;
static tl_acquired *g_free_head, *g_free_tail;
static size_t g_n_free;

static bool live_locked(const tl_session *s) {
    tl__os_mutex_assert_held(&g_mu);
    for (size_t i = 0; i < g_n_live; i++)
        if (g_live[i] == s) return true;
    return false;
}

static tl_status register_session(tl_session *s) {
    tl__os_mutex_lock(&g_mu);
    if (g_n_live == g_cap_live) {
        size_t nc = g_cap_live ? g_cap_live * 2 : 16;
        tl_session **p = tl__os_realloc(g_live, nc * sizeof *p);
        if (!p) {
            tl__os_mutex_unlock(&g_mu);
            return tl__err(TL_ERR_NOMEM, "session: out of memory");
        }
        g_live = p;
        g_cap_live = nc;
    }
    g_live[g_n_live++] = s;
    s->serial = ++g_serial;
    tl__os_mutex_unlock(&g_mu);
    return TL_OK;
}

static void unregister_session(tl_session *s) {
    tl__os_mutex_lock(&g_mu);
    for (size_t i = 0; i < g_n_live; i++)
        if (g_live[i] == s) {
            g_live[i] = g_live[--g_n_live];
            break;
        }
    tl__os_mutex_unlock(&g_mu);
}

/* A cleared set header: a recycled one when enough wait, else a new one. */
static tl_acquired *header_get(void) {
    tl_acquired *a = NULL;
    tl__os_mutex_lock(&g_mu);
    if (g_n_free > SET_QUARANTINE) {
        a = g_free_head;
        g_free_head = a->next;
        if (!g_free_head) g_free_tail = NULL;
        g_n_free--;
    }
    tl__os_mutex_unlock(&g_mu);
    if (!a) return tl__os_calloc(1, sizeof *a);
    uint64_t gen = a->gen;
    memset(a, 0, sizeof *a);
    a->gen = gen + 1;
    return a;
}

static void header_put(tl_acquired *a) {
    tl__os_mutex_lock(&g_mu);
    a->next = NULL;
    if (g_free_tail)
        g_free_tail->next = a;
    else
        g_free_head = a;
    g_free_tail = a;
    g_n_free++;
    tl__os_mutex_unlock(&g_mu);
}

/*
 * Take set a out of circulation for a release through s: it must be live and
 * s's. Refused (TL_ERR_INVALID_ARG, nothing touched) otherwise.
 */
static tl_status claim(tl_session *s, tl_acquired *a, const char *fn) {
    const char *why = NULL;
    tl__os_mutex_lock(&g_mu);
    if (!s)
        why = "NULL session";
    else if (!live_locked(s))
        why = "the session was destroyed (or is not a session)";
    else if (!a->live)
        why = "the set was already released";
    else if (a->owner != s || a->serial != s->serial)
        why = "the set was acquired from another session";
    else
        a->live = false;
    uint64_t gen = a->gen;
    tl__os_mutex_unlock(&g_mu);
    if (why)
        return tl__err(TL_ERR_INVALID_ARG, "%s: acquired set %p (use %llu): %s", fn, (void *)a,
                       (unsigned long long)gen, why);
    return TL_OK;
}

/* --- small helpers --- */

const char *tl_tier_name(tl_tier t) {
    static const char *names[] = {"file", "ram", "pinned", "device", "spill"};
    return (unsigned)t < TL_TIER_COUNT ? names[t] : NULL;
}

void tl_session_options_init(tl_session_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

static const char *tname(const tl_session *s, const unit *u) {
    return tl_model_tensor(s->m, u->pl.tensor)->name;
}

static const char *fpath(const tl_session *s, const unit *u) {
    return tl_model_file(s->m, tl_model_tensor(s->m, u->pl.tensor)->file)->path;
}

static double now_locked(const tl_session *s, int32_t dev) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    double t;
    if (dev < 0 && s->n_dev) dev = 0; /* host events on the first device's clock */
    if (dev >= 0 && s->dev[dev].sim && tl_device_sim_clock(s->dev[dev].d, &t) == TL_OK) return t;
    return tl__os_now() - s->t0;
}

static void event_locked(tl_session *s, tl_session_event_kind k, const unit *u, tl_tier from,
                         tl_tier to, int32_t dev, uint64_t bytes) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    if (!s->ev_cap) return;                              /* the log is off */
    if (s->n_ev == s->alloc_ev && s->n_ev < s->ev_cap) { /* not wrapped yet: ev_head is 0 */
        size_t nc = s->alloc_ev ? s->alloc_ev * 2 : 1024;
        if (nc > s->ev_cap) nc = s->ev_cap;
        tl_session_event *p = tl__os_realloc(s->ev, nc * sizeof *p);
        if (p) {
            s->ev = p;
            s->alloc_ev = nc;
        } else if (s->alloc_ev) {
            s->ev_cap = s->alloc_ev; /* no memory to grow: the bound is what there is */
        } else {
            s->ev_next++; /* not even one entry: this one is lost, and counted */
            s->ev_dropped++;
            return;
        }
    }
    size_t slot;
    if (s->n_ev == s->ev_cap) { /* full: the oldest makes way */
        slot = s->ev_head;
        s->ev_head = (s->ev_head + 1) % s->ev_cap;
        s->ev_dropped++;
    } else {
        slot = (s->ev_head + s->n_ev++) % s->ev_cap;
    }
    s->ev_next++;
    const tl_tensor_info *t = tl_model_tensor(s->m, u->pl.tensor);
    size_t layer = tl_model_tensor_layer(s->m, u->pl.tensor);
    s->ev[slot] = (tl_session_event){now_locked(s, dev),
                                     k,
                                     t->component,
                                     layer == TL_NOT_FOUND ? -1 : (int32_t)layer,
                                     from,
                                     to,
                                     dev >= 0 ? (int32_t)s->dev[dev].plan_index : -1,
                                     bytes};
}

static void moved_locked(tl_session *s, tl_tier from, tl_tier to, uint64_t n) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    s->st.moved[from][to] += n;
    s->st.bytes_moved += n;
}

/*
 * Does the unit need device memory of its own? (empty tensors do not, nor do
 * host-pointer devices unless the session copies to them: no_zero_copy, or
 * the unit is converted or made by the producer)
 */
static bool on_device(const tl_session *s, const unit *u) {
    return u->dev != TLR_HOST &&
           (!s->dev[u->dev].host_ptr || s->o.no_zero_copy || u->x.from != u->x.to ||
            u->produced) &&
           u->pl.len > 0;
}

/* Does a load of u start from the file's bytes? (not from a RAM, pinned or spill copy) */
static bool from_file(const unit *u) {
    return !u->ram && !(u->pin && u->pin_valid) && !u->sp_map;
}

/* Will a load of u convert the file's bytes? (its RAM, pinned and spill copies are converted) */
static bool converts(const unit *u) {
    return u->x.from != u->x.to && from_file(u);
}

/* Will the producer make u's bytes? (its RAM and spill copies hold what it made) */
static bool produces(const tl_session *s, const unit *u) {
    return s->prod.rows && u->produced && from_file(u);
}

/* Is u loaded with an asynchronous copy? (conversions run on the mover, through staging) */
static bool async_load(const tl_session *s, const unit *u) {
    return s->dev[u->dev].async && !converts(u) && !produces(s, u);
}

/* Where a unit's bytes are readable on the host, and which tier that is. */
static const unsigned char *host_src(const tl_session *s, const unit *u, tl_tier *tier,
                                     bool *mapped) {
    if (u->ram) {
        *tier = TL_TIER_RAM;
        *mapped = false;
        return u->ram;
    }
    if (u->pin && u->pin_valid) {
        *tier = TL_TIER_PINNED;
        *mapped = false;
        return u->pin;
    }
    if (u->sp_map) {
        *tier = TL_TIER_SPILL;
        *mapped = true;
        return u->sp_map;
    }
    *tier = TL_TIER_FILE;
    *mapped = true;
    return (const unsigned char *)tl_model_tensor_data(s->m, u->pl.tensor) + u->x.src_off;
}

static void dev_add_locked(tl_session *s, int32_t d, uint64_t n) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    sdev *v = &s->dev[d];
    v->used += n;
    if (v->used > v->peak) v->peak = v->used;
}

/* Device bytes of d given back: the pool counts them free and wakes waiters of every session. */
static void dev_sub_locked(tl_session *s, int32_t d, uint64_t n) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    s->dev[d].used -= n;
    tlr_pool_give(s->dev[d].pool, n);
}

/* --- spill file --- */

static tl_status spill_open_locked(tl_session *s) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    if (s->spill_fd >= 0) return TL_OK;
    int e = tl__os_open_tmpfile(s->spill_dir, &s->spill_fd);
    if (e) {
        s->spill_fd = -1;
        return tl__err(e == ENOENT ? TL_ERR_NOT_FOUND : TL_ERR_IO,
                       "spill directory %s: cannot create a spill file: %s", s->spill_dir,
                       strerror(e));
    }
    return TL_OK;
}

static void extent_take_locked(tl_session *s, uint64_t len, uint64_t *off) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    len = (len + SPILL_ALIGN - 1) & ~(SPILL_ALIGN - 1);
    for (size_t i = 0; i < s->n_free; i++)
        if (s->free_ext[i].len >= len) {
            *off = s->free_ext[i].off;
            s->free_ext[i].off += len;
            s->free_ext[i].len -= len;
            if (s->free_ext[i].len == 0) s->free_ext[i] = s->free_ext[--s->n_free];
            return;
        }
    *off = s->spill_end;
    s->spill_end += len;
}

static void extent_give_locked(tl_session *s, uint64_t off, uint64_t len) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    len = (len + SPILL_ALIGN - 1) & ~(SPILL_ALIGN - 1);
    if (off + len == s->spill_end) {
        s->spill_end = off;
        tl__os_ftruncate(s->spill_fd, s->spill_end); /* give the blocks back */
        return;
    }
    if (s->n_free == s->cap_free) {
        size_t nc = s->cap_free ? s->cap_free * 2 : 16;
        extent *p = tl__os_realloc(s->free_ext, nc * sizeof *p);
        if (!p) return; /* the extent is lost until the session ends: space, not data */
        s->free_ext = p;
        s->cap_free = nc;
    }
    s->free_ext[s->n_free++] = (extent){off, len};
}

/* Drop a unit's pinned host copy. */
static void drop_pin_locked(tl_session *s, unit *u) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    if (!u->pin) return;
    tl_device_unpin(s->dev[u->dev].d, u->pin, u->pin_len);
    tl__warm_give(u->pin, u->pin_len, false); /* kept warm within its bound, else unmapped */
    s->st.pinned_used -= u->pl.len;
    u->pin = NULL;
    u->pin_len = 0;
    u->pin_valid = false;
}

/* Drop a unit's host copies (RAM, pinned and spill). */
static void drop_copies_locked(tl_session *s, unit *u) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    drop_pin_locked(s, u);
    if (u->ram) {
        tl__warm_give(u->ram, u->ram_len, false);
        s->st.host_used -= u->pl.len;
        u->ram = NULL;
    }
    if (u->sp_map) {
        tl__os_unmap(u->sp_map, u->sp_len);
        extent_give_locked(s, u->sp_off, u->sp_len);
        s->st.spill_used -= u->sp_len;
        u->sp_map = NULL;
    }
}

/* A dirty unit leaving its device: to RAM while allowed, else to the spill file. */
static tl_status save_dirty_locked(tl_session *s, unit *u) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    sdev *v = &s->dev[u->dev];
    uint64_t n = u->pl.len;
    bool ram_ok = s->st.host_used + n <= s->host_budget;
    if (ram_ok && s->o.spill_threshold) {
        tl_memstats ms;
        if (tl_memstats_read(&ms, sizeof ms) == TL_OK && ms.mem_available < s->o.spill_threshold)
            ram_ok = false;
    }
    tl__io_xfer x = {.len = n, .path = fpath(s, u), .name = tname(s, u)};
    x.src.kind = TL_IO_DEVICE;
    x.src.dev = v->d;
    x.src.dptr = u->dptr;
    if (ram_ok) {
        void *p;
        uint64_t plen;
        int e = tl__warm_take(n ? n : 1, &p, &plen)
                    ? 0
                    : tl__os_anon_alloc(n ? n : 1, TL_OS_PAGES_SMALL, &p, &plen);
        if (!e) {
            x.dst.kind = TL_IO_HOST;
            x.dst.host = p;
            tl_status st = tl__io_run(s->io, &x, 1, TL_IO_DEMAND);
            if (st) {
                tl__warm_give(p, plen, false);
                return st;
            }
            u->ram = p;
            u->ram_len = plen;
            s->st.host_used += n;
            if (s->st.host_used > s->st.host_peak) s->st.host_peak = s->st.host_used;
            moved_locked(s, TL_TIER_DEVICE, TL_TIER_RAM, n);
            event_locked(s, TL_EVENT_SPILL, u, TL_TIER_DEVICE, TL_TIER_RAM, u->dev, n);
            return TL_OK;
        }
    }
    tl_status st = spill_open_locked(s);
    if (st) return st;
    uint64_t off;
    extent_take_locked(s, n, &off);
    uint64_t alen = (n + SPILL_ALIGN - 1) & ~(SPILL_ALIGN - 1);
    x.dst.kind = TL_IO_FILE;
    x.dst.fd = s->spill_fd;
    x.dst.off = off;
    /* a failed write (a full disk) is the spill directory's, not the model file's */
    char where[512];
    snprintf(where, sizeof where, "spill directory %s", s->spill_dir);
    x.path = where;
    st = tl__io_run(s->io, &x, 1, TL_IO_DEMAND);
    void *map = NULL;
    if (!st) {
        int e = tl__os_map_shared_ro(s->spill_fd, off, alen, &map);
        if (e)
            st = tl__err(TL_ERR_IO, "spill directory %s: spill file: cannot map it back: %s",
                         s->spill_dir, strerror(e));
    }
    if (st) {
        extent_give_locked(s, off, alen);
        return tl__err_prefix(st, "spilling tensor %s (it stays on %s)", tname(s, u),
                              tl_device_name(v->d));
    }
    u->sp_map = map;
    u->sp_off = off;
    u->sp_len = alen;
    s->st.spill_used += alen;
    if (s->st.spill_used > s->st.spill_peak) s->st.spill_peak = s->st.spill_used;
    s->st.spills++;
    moved_locked(s, TL_TIER_DEVICE, TL_TIER_SPILL, n);
    event_locked(s, TL_EVENT_SPILL, u, TL_TIER_DEVICE, TL_TIER_SPILL, u->dev, n);
    return TL_OK;
}

/* Wait for the fence of a unit's last release (once per fence), then forget it. */
static tl_status fence_wait_locked(tl_session *s, unit *u) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    fence *f = u->fence;
    if (!f) return TL_OK;
    tl_status st = TL_OK;
    if (!f->waited) {
        st = f->wait(f->arg);
        if (st) return tl__err_prefix(st, "tensor %s: waiting for the engine's fence", tname(s, u));
        f->waited = true;
    }
    u->fence = NULL;
    if (--f->holders == 0) free(f);
    return st;
}

/* Take a unit off its device (saving it first when dirty). */
static tl_status evict_unit_locked(tl_session *s, unit *u) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    sdev *v = &s->dev[u->dev];
    tl_status fs = fence_wait_locked(s, u); /* the engine's work on it first */
    if (fs) return fs;
    if (u->dirty) {
        tl_status st = save_dirty_locked(s, u);
        if (st) return st;
        u->dirty = false;
    } else {
        s->st.drops++;
        event_locked(s, TL_EVENT_DROP, u, TL_TIER_DEVICE, TL_TIER_FILE, u->dev, u->pl.len);
    }
    if (u->ticket) tl_device_wait(v->d, u->ticket);
    tl_device_free(v->d, u->dptr);
    u->on_dev = false;
    heap_sync_locked(s, u);
    u->dptr = 0;
    u->ticket = 0;
    dev_sub_locked(s, u->dev, u->pl.len);
    s->st.evictions++;
    return TL_OK;
}

static size_t next_use_locked(const tl_session *s, const unit *u) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    if (!s->steps) return (size_t)-1;
    size_t n = s->n_uses[u->group], at = tlr_lower_bound(s->uses[u->group], n, s->pos);
    return at < n ? s->uses[u->group][at] : (size_t)-1;
}

/*
 * --- eviction order ---
 *
 * Each device keeps its evictable units (on it, not loading, unreferenced) in
 * a binary heap whose top is the next victim: with a schedule (policy not
 * LRU) the furthest next use first, then the least recently used; else
 * streamed units before resident ones, then the least recently used. Ties go
 * to the lower unit index, so the order is total. A unit's key does not
 * change while it is in the heap, except its next use as the schedule
 * advances: advance_schedule_locked re-places the units of the steps passed.
 * Every change of on_dev, loading or refs calls heap_sync_locked.
 */

/* With a schedule: does the unit of a leave before the unit of b? */
static bool hent_before(const hent *a, const hent *b) {
    if (a->nu != b->nu) return a->nu > b->nu; /* the furthest next use */
    if (a->last_use != b->last_use) return a->last_use < b->last_use;
    return a->k < b->k;
}

/* Does a leave before b? */
static bool evict_before(const tl_session *s, const unit *a, const unit *b) {
    if (s->furthest) {
        hent x = {a->nu, a->last_use, (size_t)(a - s->u)},
             y = {b->nu, b->last_use, (size_t)(b - s->u)};
        return hent_before(&x, &y);
    }
    if (a->pl.streamed != b->pl.streamed) return a->pl.streamed;      /* streamed units first */
    if (a->last_use != b->last_use) return a->last_use < b->last_use; /* the least recently used */
    return a < b;
}

static void heap_set(tl_session *s, sdev *v, size_t at, hent e) {
    v->heap[at] = e;
    s->hp[e.k] = at;
}

static void heap_up(tl_session *s, sdev *v, size_t at) {
    hent e = v->heap[at];
    while (at > 0) {
        size_t up = (at - 1) / 2;
        if (!hent_before(&e, &v->heap[up])) break;
        heap_set(s, v, at, v->heap[up]);
        at = up;
    }
    heap_set(s, v, at, e);
}

static void heap_down(tl_session *s, sdev *v, size_t at) {
    hent e = v->heap[at];
    for (;;) {
        size_t c = 2 * at + 1;
        if (c >= v->n_heap) break;
        if (c + 1 < v->n_heap && hent_before(&v->heap[c + 1], &v->heap[c])) c++;
        if (!hent_before(&v->heap[c], &e)) break;
        heap_set(s, v, at, v->heap[c]);
        at = c;
    }
    heap_set(s, v, at, e);
}

/* Take unit k out of its device's list. */
static void list_remove(tl_session *s, sdev *v, size_t k) {
    unit *u = &s->u[k];
    int l = !u->pl.streamed;
    if (u->lprev != NOT_EVICTABLE)
        s->u[u->lprev].lnext = u->lnext;
    else
        v->lhead[l] = u->lnext;
    if (u->lnext != NOT_EVICTABLE)
        s->u[u->lnext].lprev = u->lprev;
    else
        v->ltail[l] = u->lprev;
    u->lprev = u->lnext = NOT_EVICTABLE;
}

/*
 * Put unit k in its device's list at its place in the order: at the head when
 * it goes first, else after the last unit from the tail that goes before it
 * (a unit released goes at the tail, or near it, unless released long after
 * its acquire: the walk is as long as the units released since then).
 */
static void list_insert(tl_session *s, sdev *v, size_t k) {
    unit *u = &s->u[k];
    int l = !u->pl.streamed;
    size_t after = v->ltail[l];
    if (v->lhead[l] == NOT_EVICTABLE || evict_before(s, u, &s->u[v->lhead[l]]))
        after = NOT_EVICTABLE;
    else
        while (evict_before(s, u, &s->u[after]))
            after = s->u[after].lprev;
    u->lprev = after;
    u->lnext = after == NOT_EVICTABLE ? v->lhead[l] : s->u[after].lnext;
    if (u->lprev != NOT_EVICTABLE)
        s->u[u->lprev].lnext = k;
    else
        v->lhead[l] = k;
    if (u->lnext != NOT_EVICTABLE)
        s->u[u->lnext].lprev = k;
    else
        v->ltail[l] = k;
}

static void heap_remove(tl_session *s, unit *u) {
    sdev *v = &s->dev[u->dev];
    bool listed = u->hpos == IN_LIST;
    u->hpos = NOT_EVICTABLE;
    v->evictable -= u->pl.len;
    if (listed) {
        v->n_heap--;
        list_remove(s, v, (size_t)(u - s->u));
        return;
    }
    size_t at = s->hp[u - s->u];
    hent last = v->heap[--v->n_heap];
    if (at == v->n_heap) return;
    heap_set(s, v, at, last);
    heap_up(s, v, at);
    heap_down(s, v, s->hp[last.k]);
}

/* Put unit u in its device's heap, or take it out, as its state says (its key made current). */
static void heap_sync_untimed(tl_session *s, unit *u) {
    if (u->hpos != NOT_EVICTABLE) heap_remove(s, u);
    if (!on_device(s, u) || !u->on_dev || u->loading || u->refs) return;
    sdev *v = &s->dev[u->dev];
    if (!s->furthest) {
        u->hpos = IN_LIST;
        v->n_heap++;
        v->evictable += u->pl.len;
        list_insert(s, v, (size_t)(u - s->u));
        return;
    }
    u->nu = next_use_locked(s, u);
    v->heap[v->n_heap] = (hent){u->nu, u->last_use, (size_t)(u - s->u)};
    u->hpos = IN_HEAP;
    v->evictable += u->pl.len;
    heap_up(s, v, v->n_heap++);
}

/*
 * An interval of the eviction order's work timed (tl__session_victim_timing):
 * the clock's least cost taken out (what it keeps of the clock's noise counts
 * as work); one over 1 ms was preempted (the work takes microseconds at most)
 * and is dropped, so that the sum is the CPU time of the work.
 */
static void victim_time_add(tl_session *s, double t) {
    s->victim_timed++;
    if (t > 1e-3) {
        s->victim_dropped++;
        return;
    }
    s->victim_t += t - s->timer_min;
}

static void heap_sync_locked(tl_session *s, unit *u) {
    tl__os_mutex_assert_held(&s->mu);
    if (!s->time_victims) {
        heap_sync_untimed(s, u);
        return;
    }
    double t0 = tl__os_now();
    heap_sync_untimed(s, u);
    victim_time_add(s, tl__os_now() - t0);
}

/* Every heap made again (the eviction order changed: a schedule was set or cleared). */
static void heap_rebuild_locked(tl_session *s) {
    tl__os_mutex_assert_held(&s->mu);
    s->furthest = s->steps && s->o.policy != TL_EVICT_LRU;
    for (size_t d = 0; d < s->n_dev; d++) {
        s->dev[d].n_heap = 0;
        s->dev[d].evictable = 0;
        for (int l = 0; l < 2; l++)
            s->dev[d].lhead[l] = s->dev[d].ltail[l] = NOT_EVICTABLE;
    }
    for (size_t i = 0; i < s->n_u; i++) {
        s->u[i].hpos = s->u[i].lprev = s->u[i].lnext = NOT_EVICTABLE;
        heap_sync_locked(s, &s->u[i]);
    }
}

/* The unit of device d to evict next, or n_u when none may go. */
static size_t victim_locked(const tl_session *s, int32_t d) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    const sdev *v = &s->dev[d];
    if (s->furthest) return v->n_heap ? v->heap[0].k : s->n_u;
    if (s->learn && !s->steps) { /* learning a pass: keep its beginning, which repeats first */
        size_t a = v->ltail[0], b = v->ltail[1]; /* the last streamed and resident units */
        return a != NOT_EVICTABLE ? a : b == NOT_EVICTABLE ? s->n_u : b;
    }
    size_t a = v->lhead[0], b = v->lhead[1]; /* the first streamed and resident units */
    if (a == NOT_EVICTABLE) return b == NOT_EVICTABLE ? s->n_u : b;
    if (b == NOT_EVICTABLE) return a;
    return evict_before(s, &s->u[a], &s->u[b]) ? a : b;
}

/* victim_locked, timed when the bench asks (tl__session_victim_timing). */
static size_t choose_victim_locked(tl_session *s, int32_t d) {
    if (!s->time_victims) return victim_locked(s, d);
    double t0 = tl__os_now();
    size_t k = victim_locked(s, d);
    victim_time_add(s, tl__os_now() - t0);
    s->victim_choices++;
    return k;
}

void tl__session_victim_timing(tl_session *s, bool on, uint64_t *ns, uint64_t *choices,
                               uint64_t *timer_ns, uint64_t *dropped) {
    tl__os_mutex_lock(&s->mu);
    double t = s->victim_t > 0 ? s->victim_t : 0;
    if (ns) *ns = (uint64_t)(t * 1e9);
    if (dropped) *dropped = s->victim_dropped;
    if (choices) *choices = s->victim_choices;
    /* what the timing itself cost the caller: two readings of the clock per interval */
    if (timer_ns) *timer_ns = (uint64_t)(2.0 * s->timer_cost * (double)s->victim_timed * 1e9);
    if (on && !s->time_victims) { /* the cost of a reading, from 4096 back to back */
        double t0 = tl__os_now(), t1 = t0, least = 1;
        for (int i = 0; i < 4096; i++) {
            double now = tl__os_now();
            if (now - t1 < least) least = now - t1;
            t1 = now;
        }
        s->timer_cost = (t1 - t0) / 4096;
        s->timer_min = least;
    }
    s->time_victims = on;
    s->victim_t = 0;
    s->victim_choices = s->victim_timed = s->victim_dropped = 0;
    tl__os_mutex_unlock(&s->mu);
}

/*
 * Free room for need bytes on device d. before: with a schedule, evict only
 * units next used after that step (a prefetch must not push out what is
 * needed sooner than what it loads); (size_t)-1 = no such limit.
 */
static tl_status make_room_locked(tl_session *s, int32_t d, uint64_t need, size_t before,
                                  bool *ok) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    sdev *v = &s->dev[d];
    *ok = true;
    while (v->used + need > v->budget) {
        size_t k = choose_victim_locked(s, d);
        if (k == s->n_u || (before != (size_t)-1 && next_use_locked(s, &s->u[k]) <= before)) {
            *ok = false;
            return TL_OK;
        }
        tl_status st = evict_unit_locked(s, &s->u[k]);
        if (st) return st;
    }
    return TL_OK;
}

/*
 * Evict unreferenced units of device d until it is within its budget again,
 * and the device within its total for all sessions (budgets lowered while
 * units were held or loading), as far as they go.
 */
static void shrink_locked(tl_session *s, int32_t d) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    sdev *v = &s->dev[d];
    for (;;) {
        uint64_t total = tlr_pool_total(v->pool);
        if (v->used <= v->budget && (!total || tlr_pool_used(v->pool) <= total)) break;
        size_t k = choose_victim_locked(s, d);
        if (k == s->n_u || evict_unit_locked(s, &s->u[k])) break;
    }
}

/* Bytes of device d that eviction could free now. */
static uint64_t evictable_locked(const tl_session *s, int32_t d) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    return s->dev[d].evictable;
}

/*
 * Allocate a unit's device memory; on a refusal the budget did not expect,
 * evict and retry once. Where other sessions share the device, the refusal is
 * the pool's to answer (eviction across sessions, in one order): *pool_short
 * says how many bytes to free, nothing is allocated, TL_OK. So it is, for an
 * acquire (pool_short not NULL), when the session's own eviction was not
 * enough and the device has a reclaim callback to ask.
 */
static tl_status alloc_locked(tl_session *s, unit *u, uint64_t *pool_short) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    sdev *v = &s->dev[u->dev];
    uint64_t n = u->pl.len ? u->pl.len : 1;
    tl_status st = tl_device_alloc(v->d, n, &u->dptr);
    if (st != TL_ERR_DEVICE_OOM) return st;
    if (pool_short && tlr_pool_members(v->pool) > 1) {
        tl__err_clear();
        *pool_short = n;
        return TL_OK;
    }
    /* another process took memory: evict the coldest unreferenced units for the shortfall */
    uint64_t freed = 0;
    while (freed < n) {
        size_t k = choose_victim_locked(s, u->dev);
        if (k == s->n_u) break;
        uint64_t len = s->u[k].pl.len;
        if (evict_unit_locked(s, &s->u[k])) break;
        freed += len;
    }
    st = tl_device_alloc(v->d, n, &u->dptr);
    if (st == TL_OK) {
        s->st.oom_recoveries++;
        return TL_OK;
    }
    if (pool_short && tlr_pool_has_reclaim(v->pool)) {
        tl__err_clear();
        *pool_short = n;
        return TL_OK;
    }
    tl_device_info info;
    uint64_t free_now = tl_device_describe(v->d, &info, sizeof info) == TL_OK ? info.free : 0;
    char a[32], f[32], e[32], g[32];
    return tl__err(TL_ERR_DEVICE_OOM,
                   "%s: tensor %s: %s refused the allocation (asked %s, free %s, evictable %s "
                   "after evicting %s)",
                   fpath(s, u), tname(s, u), tl_device_name(v->d), tl_fmt_bytes(n, a, sizeof a),
                   tl_fmt_bytes(free_now, f, sizeof f),
                   tl_fmt_bytes(evictable_locked(s, u->dev), e, sizeof e),
                   tl_fmt_bytes(freed, g, sizeof g));
}

/* --- creation --- */

static uint64_t env_size(tl__env_var name) {
    const char *v = tl__env_get(name);
    uint64_t b = 0;
    if (v && *v && tl_parse_bytes(v, &b, NULL) != TL_OK) b = 0;
    return b;
}

tl_status tl_session_destroy(tl_session *s) {
    if (!s) return TL_OK;
    tl__os_mutex_lock(&s->mu);
    size_t out = s->n_sets + s->acquiring;
    tl__os_mutex_unlock(&s->mu);
    /* a caller's bug: debug builds stop here, others refuse and keep the session */
    TL_ASSERT(out == 0 && "tl_session_destroy with acquired sets outstanding");
    if (out)
        return tl__err(TL_ERR_INVALID_ARG,
                       "tl_session_destroy: %zu acquired sets are outstanding: release them "
                       "first (the session stays as it was)",
                       out);
    unregister_session(s);
    for (size_t d = 0; d < s->n_dev; d++) /* no pool chooses among its units from here on */
        tlr_pool_leave(s->dev[d].pool, s);
    while (s->pend) {
        pending *p = s->pend;
        s->pend = p->next;
        tl__io_batch_destroy(p->b);
        free(p->units);
        free(p);
    }
    tl__os_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n_u; i++) {
        unit *u = &s->u[i];
        if (u->fence) fence_wait_locked(s, u);
        if (u->on_dev || u->loading) {
            if (u->ticket) tl_device_wait(s->dev[u->dev].d, u->ticket);
            tl_device_free(s->dev[u->dev].d, u->dptr);
        }
        drop_copies_locked(s, u);
    }
    for (size_t d = 0; d < s->n_dev; d++) {
        tlr_pool_give(s->dev[d].pool, s->dev[d].used);
        s->dev[d].used = 0;
    }
    tl__os_mutex_unlock(&s->mu);
    tl__io_engine_destroy(s->io);
    for (size_t d = 0; d < s->n_dev; d++) {
        tlr_pool_put(s->dev[d].pool);
        tl_device_release(s->dev[d].d);
    }
    if (s->spill_fd >= 0) tl__os_close(s->spill_fd);
    if (s->uses)
        for (size_t g = 0; g < s->uses_ng; g++)
            free(s->uses[g]);
    free(s->uses);
    free(s->n_uses);
    for (size_t i = 0; i < s->n_gv; i++) {
        free(s->gv[i].name);
        free(s->gv[i].tensors);
        free(s->gv[i].sorted);
    }
    free(s->gv);
    tlr_groups_free(&s->groups);
    free(s->steps);
    free(s->pass);
    free(s->rec);
    free(s->u);
    free(s->first);
    free(s->xinfo);
    free(s->epoch);
    free(s->gfirst);
    free(s->gunits);
    free(s->hp);
    for (size_t d = 0; d < TL_PLAN_MAX_DEVICES; d++)
        free(s->dev[d].heap);
    free(s->free_ext);
    free(s->ev);
    free(s->spill_dir);
    tl__type_rules_free(&s->types);
    tl__os_mutex_destroy(&s->mu);
    tl__os_mutex_destroy(&s->pmu);
    tl__os_cond_destroy(&s->pcv);
    tl__os_cond_destroy(&s->bcv);
    tl__os_cond_destroy(&s->rcv);
    free(s);
    return TL_OK;
}

static tl_status bind_devices(tl_session *s) {
    const tl_plan *p = s->p;
    uint64_t reserve[TL_PLAN_MAX_DEVICES] = {0};
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        tl_plan_decision d;
        if (tl_plan_decision_of(p, (tl_component)c, &d, sizeof d) || !d.present) continue;
        s->comp_reserve[c] = d.reserve;
        for (uint32_t k = 0; k < d.n_devices; k++) {
            if (d.reserve > reserve[d.devices[k]]) reserve[d.devices[k]] = d.reserve;
            if (d.devices[k] < 64) s->comp_devs[c] |= 1ull << d.devices[k];
        }
    }
    for (size_t i = 0; i < tl_plan_device_count(p) && i < TL_PLAN_MAX_DEVICES; i++) {
        const tl_plan_device *pd = tl_plan_device_of(p, i);
        s->plan2dev[i] = TLR_HOST;
        if (!pd->is_gpu) continue;
        tl_device *d = NULL;
        tl_status st = tl_device_find(pd->name, &d);
        if (st)
            return tl__err(TL_ERR_NOT_FOUND,
                           "the plan places weights on '%s', but no device of that name is "
                           "registered",
                           pd->name);
        sdev *v = &s->dev[s->n_dev]; /* tl_device_find's reference is the session's */
        v->d = d;
        v->plan_index = (uint32_t)i;
        tl_device_info info;
        st = tl_device_describe(d, &info, sizeof info);
        if (st) {
            tl_device_release(d);
            return st;
        }
        v->host_ptr = info.host_pointer;
        v->sim = tl_device_kind_of(d) == TL_DEVICE_SIM;
        v->async = info.async && !s->o.no_async;
        v->pinned = info.pinned && !v->host_ptr;
        s->st.devices[s->n_dev].pinned = v->pinned;
        uint64_t b = tl_plan_device_budget(p, i);
        v->budget = b > reserve[i] ? b - reserve[i] : 0;
        if (i < s->o.n_device_budgets && s->o.device_budgets && s->o.device_budgets[i])
            v->budget = s->o.device_budgets[i];
        v->base = v->budget + reserve[i];
        st = tlr_pool_join(d, s, &s->rcv, &v->pool);
        if (st) {
            tl_device_release(d);
            return st;
        }
        s->plan2dev[i] = (int32_t)s->n_dev;
        snprintf(s->st.devices[s->n_dev].name, sizeof s->st.devices[0].name, "%s", pd->name);
        s->n_dev++;
    }
    return TL_OK;
}

/* Room in gfirst for ng groups. */
static tl_status gfirst_fit(tl_session *s, size_t ng) {
    if (ng + 2 <= s->gfirst_cap) return TL_OK;
    size_t *gfirst = tl__os_realloc(s->gfirst, (ng + 2) * sizeof *gfirst);
    if (!gfirst) return tl__err(TL_ERR_NOMEM, "session: out of memory");
    s->gfirst = gfirst;
    s->gfirst_cap = ng + 2;
    return TL_OK;
}

/* The units of each group (gfirst, gunits) from the units' groups. */
static tl_status index_groups(tl_session *s) {
    size_t ng = s->groups.n;
    tl_status st = gfirst_fit(s, ng);
    if (st) return st;
    size_t *gfirst = s->gfirst;
    memset(gfirst, 0, (ng + 2) * sizeof *gfirst);
    for (size_t i = 0; i < s->n_u; i++)
        gfirst[s->u[i].group + 2]++; /* group < ng */
    for (size_t g = 0; g < ng; g++) /* gfirst[g + 2]: counts, then gfirst[g + 1]: starts */
        gfirst[g + 2] += gfirst[g + 1];
    for (size_t i = 0; i < s->n_u; i++)
        s->gunits[gfirst[s->u[i].group + 1]++] = i;
    return TL_OK;
}

/* The units of each group, and each device's heap (empty: nothing is on a device yet). */
static tl_status index_units(tl_session *s) {
    s->gunits = tl__os_malloc((s->n_u ? s->n_u : 1) * sizeof *s->gunits);
    s->hp = tl__os_malloc((s->n_u ? s->n_u : 1) * sizeof *s->hp);
    if (!s->gunits || !s->hp) return tl__err(TL_ERR_NOMEM, "session: out of memory");
    tl_status st = index_groups(s);
    if (st) return st;
    size_t per_dev[TL_PLAN_MAX_DEVICES] = {0};
    for (size_t i = 0; i < s->n_u; i++)
        if (s->u[i].dev != TLR_HOST) per_dev[s->u[i].dev]++; /* tl_session_set_dtype may copy it */
    for (size_t d = 0; d < s->n_dev; d++) {
        s->dev[d].heap = tl__os_malloc((per_dev[d] ? per_dev[d] : 1) * sizeof *s->dev[d].heap);
        if (!s->dev[d].heap) return tl__err(TL_ERR_NOMEM, "session: out of memory");
    }
    tl__os_mutex_lock(&s->mu);
    heap_rebuild_locked(s);
    tl__os_mutex_unlock(&s->mu);
    return TL_OK;
}

/*
 * Keep tensor t as `to` (checked; none of its units holds anything): its
 * units' lengths become the converted ones and the info handed out says so.
 */
static tl_status keep_as(tl_session *s, size_t t, tl_dtype to) {
    if (!s->xinfo) {
        s->xinfo = tl__os_calloc(tl_model_tensor_count(s->m), sizeof *s->xinfo);
        if (!s->xinfo) return tl__err(TL_ERR_NOMEM, "session: out of memory");
    }
    if (to == tl_model_tensor(s->m, t)->dtype)
        s->xinfo[t] = (tl_tensor_info){0};
    else
        tlr_xform_info(s->m, t, to, &s->xinfo[t]);
    for (size_t q = s->first[t]; q < s->first[t + 1]; q++) {
        unit *u = &s->u[q];
        tlr_place file = u->pl;
        file.off = u->x.src_off;
        file.len = u->x.src_len;
        tlr_xform_unit(s->m, &file, to, &u->x);
        u->pl.off = u->x.off;
        u->pl.len = u->x.len;
    }
    return TL_OK;
}

/* A tensor kept in host memory (the mapping itself, zero copy) stays in the file's type. */
static bool on_host(const tl_session *s, size_t t) {
    for (size_t q = s->first[t]; q < s->first[t + 1]; q++)
        if (s->u[q].dev == TLR_HOST) return true;
    return false;
}

/*
 * tl_session_options.type_rules and dtype: every tensor the rules give a type,
 * and every other one tl_convert_target picks, on devices.
 */
static tl_status convert_all(tl_session *s) {
    tl_dtype to = s->o.convert ? s->o.dtype : TL_DTYPE_INVALID;
    if (s->o.convert && to != TL_DTYPE_F32 && to != TL_DTYPE_F16 && to != TL_DTYPE_BF16 &&
        to != TL_DTYPE_I32 && to != TL_DTYPE_Q8_0 && to != TL_DTYPE_Q4_0)
        return tl__err(TL_ERR_INVALID_ARG,
                       "tl_session_options.dtype %s: sessions convert to F32, F16, BF16, I32, "
                       "Q8_0 or Q4_0",
                       tl_dtype_name(to));
    for (size_t t = 0; t < tl_model_tensor_count(s->m); t++) {
        tl_dtype x = tl__type_target(&s->types, tl_model_tensor(s->m, t), to);
        if (x == tl_model_tensor(s->m, t)->dtype || on_host(s, t) ||
            s->first[t] == s->first[t + 1])
            continue;
        tl_status st = tlr_xform_check(s->m, t, x);
        if (!st) st = keep_as(s, t, x);
        if (st) return st;
    }
    return TL_OK;
}

tl_status tl_session_create(tl_model *m, const tl_plan *p, const tl_session_options *opts,
                            tl_session **out) {
    if (!out) return tl__err(TL_ERR_INVALID_ARG, "tl_session_create: out is NULL");
    *out = NULL;
    if (!m || !p) return tl__err(TL_ERR_INVALID_ARG, "tl_session_create: NULL model or plan");
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        if (t->strides)
            return tl__err(TL_ERR_UNSUPPORTED,
                           "%s: tensor %s is a strided view of a checkpoint storage: sessions "
                           "carry contiguous tensors (tl_model_load gathers strided ones)",
                           tl_model_file(m, t->file)->path, t->name);
    }
    tl_status st = tl_plan_check(p);
    if (st) return tl__err_prefix(st, "session");
    tl_session *s = tl__os_calloc(1, sizeof *s);
    if (!s) return tl__err(TL_ERR_NOMEM, "session: out of memory");
    tl_session_options_init(&s->o);
    st = tl__options_take(&s->o, sizeof s->o, opts, "tl_session_options");
    if (st) {
        free(s);
        return st;
    }
    s->m = m;
    s->p = p;
    s->spill_fd = -1;
    s->ev_cap = s->o.no_events ? 0 : s->o.event_cap ? s->o.event_cap : DEFAULT_EVENT_CAP;
    s->t0 = tl__os_now();
    tl__os_mutex_init(&s->mu);
    tl__os_mutex_init(&s->pmu);
    tl__os_cond_init(&s->pcv);
    tl__os_cond_init(&s->bcv);
    tl__os_cond_init(&s->rcv);
    const char *dir = s->o.spill_dir;
    if (!dir || !*dir) dir = tl__env_get(TL_ENV_SPILL_DIR);
    if (!dir || !*dir) dir = tl__env_get(TL_ENV_TMPDIR);
    if (!dir || !*dir) dir = "/tmp";
    s->spill_dir = tl__os_strdup(dir);
    if (!s->o.spill_threshold) s->o.spill_threshold = env_size(TL_ENV_SPILL_THRESHOLD);
    if (!s->spill_dir) st = tl__err(TL_ERR_NOMEM, "session: out of memory");
    if (!st) st = bind_devices(s);
    /* host budget */
    if (!st) {
        s->host_budget = s->o.host_budget;
        if (!s->host_budget) {
            tl_memstats ms;
            uint64_t room = UINT64_MAX;
            if (tl_memstats_read(&ms, sizeof ms) == TL_OK) {
                room = ms.mem_available;
                if (ms.cgroup_max != UINT64_MAX && ms.cgroup_max > ms.cgroup_current &&
                    ms.cgroup_max - ms.cgroup_current < room)
                    room = ms.cgroup_max - ms.cgroup_current;
            }
            uint64_t head = s->o.host_headroom ? s->o.host_headroom : 512ull << 20;
            s->host_budget = room > head ? room - head : 0;
        }
        s->st.host_budget = s->host_budget;
        s->st.pinned_cap = s->o.pinned_cap;
    }
    /* units */
    tlr_place *pl = NULL;
    size_t n_pl = 0;
    if (!st)
        st = tl__type_rules_parse(s->o.type_rules, &s->types);
    s->o.type_rules = NULL; /* the caller's string: the session keeps its parse */
    if (!st)
        st = tlr_place_all(m, p, &s->types, s->o.convert ? s->o.dtype : TL_DTYPE_INVALID, &pl,
                           &n_pl);
    if (!st) {
        size_t nt = tl_model_tensor_count(m);
        s->u = tl__os_calloc(n_pl ? n_pl : 1, sizeof *s->u);
        s->first = tl__os_calloc(nt + 1, sizeof *s->first);
        s->epoch = tl__os_calloc(nt ? nt : 1, sizeof *s->epoch);
        if (!s->u || !s->first || !s->epoch) st = tl__err(TL_ERR_NOMEM, "session: out of memory");
        tlr_groups_init(m, &s->groups);
        for (size_t i = 0, t = 0; !st && i < n_pl; i++) {
            unit *u = &s->u[i];
            u->pl = pl[i];
            tlr_xform_unit(m, &pl[i], tl_model_tensor(m, pl[i].tensor)->dtype, &u->x);
            u->seen_epoch = UINT32_MAX;
            u->dev = pl[i].plan_dev == TLR_HOST || (uint32_t)pl[i].plan_dev >= TL_PLAN_MAX_DEVICES
                         ? TLR_HOST
                         : s->plan2dev[pl[i].plan_dev];
            u->group = tlr_group_of(m, &s->groups, pl[i].tensor);
            while (t <= pl[i].tensor)
                s->first[t++] = i;
        }
        if (!st) {
            for (size_t t = n_pl ? pl[n_pl - 1].tensor + 1 : 0; t <= nt; t++)
                s->first[t] = n_pl;
            s->n_u = n_pl;
            if (s->o.convert || s->types.r.n) st = convert_all(s);
            if (!st) st = index_units(s);
        }
    }
    free(pl);
    if (!st) {
        tl__io_options io = {s->o.threads, s->o.staging_count, s->o.staging_size, false};
        st = tl__io_engine_create(&io, &s->io);
        if (!st) {
            s->st.staging_bound = (uint64_t)(s->o.staging_count ? s->o.staging_count : 4) *
                                  (s->o.staging_size ? s->o.staging_size : 16ull << 20);
        }
    }
    if (!st) st = register_session(s);
    if (st) {
        tl_session_destroy(s);
        return st;
    }
    *out = s;
    return TL_OK;
}

/* --- loading --- */

/* Units that fail to load give their device memory back. */
static void unload_failed_locked(tl_session *s, unit *u) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    if (u->pin && !u->pin_valid) drop_pin_locked(s, u);
    sdev *v = &s->dev[u->dev];
    if (u->ticket) tl_device_wait(v->d, u->ticket);
    tl_device_free(v->d, u->dptr);
    dev_sub_locked(s, u->dev, u->pl.len);
    u->loading = false;
    heap_sync_locked(s, u);
    u->dptr = 0;
    u->ticket = 0;
}

static void loaded_locked(tl_session *s, unit *u, bool prefetch) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    tl_tier from;
    bool mapped;
    host_src(s, u, &from, &mapped);
    if (u->pin && !u->pin_valid) { /* filled alongside this upload: the next one comes from it */
        u->pin_valid = true;
        moved_locked(s, TL_TIER_FILE, TL_TIER_PINNED, u->pl.len);
    }
    if (s->prod.rows && u->produced && from == TL_TIER_FILE) s->st.lora_loads++;
    uint32_t ep = s->epoch[u->pl.tensor];
    if (u->seen_epoch != UINT32_MAX && u->seen_epoch != ep) s->st.lora_reloads++;
    u->seen_epoch = ep;
    u->loading = false;
    u->on_dev = true;
    u->prefetched = prefetch;
    if (prefetch) u->last_use = use_tick(); /* wanted soon: the newest for LRU */
    heap_sync_locked(s, u);
    shrink_locked(s, u->dev); /* the budget may have been lowered while it loaded */
    s->st.loads++;
    moved_locked(s, from, TL_TIER_DEVICE, u->pl.len);
    event_locked(s, prefetch ? TL_EVENT_PREFETCH : TL_EVENT_LOAD, u, from, TL_TIER_DEVICE, u->dev,
                 u->pl.len);
}

/*
 * A pinned copy for a streamed unit about to be loaded from the file, when its
 * device has a pinned tier and the cap has room (least recently used copies
 * of units not loading make way): memory allocated and pinned now, filled by
 * *fill alongside the upload (true when there is one to run).
 */
static bool pin_prepare_locked(tl_session *s, unit *u, tl__io_xfer *fill) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    sdev *v = &s->dev[u->dev];
    uint64_t n = u->pl.len, cap = s->o.pinned_cap;
    if (!v->pinned || !u->pl.streamed || !cap || n == 0 || n > cap || u->pin || u->ram ||
        u->sp_map || u->dirty || u->produced)
        return false;
    while (s->st.pinned_used + n > cap) {
        size_t best = s->n_u;
        for (size_t i = 0; i < s->n_u; i++) {
            const unit *c = &s->u[i];
            if (c->pin && c->pin_valid && !c->loading &&
                (best == s->n_u || c->last_use < s->u[best].last_use))
                best = i;
        }
        if (best == s->n_u) return false;
        drop_pin_locked(s, &s->u[best]);
    }
    void *p;
    uint64_t plen;
    if (!tl__warm_take(n, &p, &plen) && tl__os_anon_alloc(n, TL_OS_PAGES_SMALL, &p, &plen))
        return false;
    if (tl_device_pin(v->d, p, plen) != TL_OK) {
        tl__err_clear();
        tl__warm_give(p, plen, false);
        return false;
    }
    u->pin = p;
    u->pin_len = plen;
    u->pin_valid = false;
    s->st.pinned_used += n;
    if (s->st.pinned_used > s->st.pinned_peak) s->st.pinned_peak = s->st.pinned_used;
    *fill = (tl__io_xfer){.len = u->x.src_len, .from = u->x.from, .to = u->x.to,
                          .path = fpath(s, u), .name = tname(s, u)};
    fill->src.kind = TL_IO_HOST;
    fill->src.host = (unsigned char *)tl_model_tensor_data(s->m, u->pl.tensor) + u->x.src_off;
    fill->src.mapped = true;
    fill->dst.kind = TL_IO_HOST;
    fill->dst.host = p;
    return true;
}

/* Transfer for loading unit u to its device. */
static tl__io_xfer load_xfer(tl_session *s, unit *u) {
    tl_tier tier;
    bool mapped;
    const unsigned char *src = host_src(s, u, &tier, &mapped);
    tl__io_xfer x = {.len = u->pl.len, .path = fpath(s, u), .name = tname(s, u)};
    if (tier == TL_TIER_FILE) { /* the file's bytes, converted on the way where kept so */
        x.len = u->x.src_len;
        x.from = u->x.from;
        x.to = u->x.to;
    }
    x.src.kind = TL_IO_HOST;
    x.src.host = (void *)src;
    x.src.mapped = mapped;
    if (s->dev[u->dev].host_ptr) { /* device memory is host memory: one (guarded) copy into it */
        x.dst.kind = TL_IO_HOST;
        x.dst.host = (void *)(uintptr_t)u->dptr;
        return x;
    }
    x.dst.kind = TL_IO_DEVICE;
    x.dst.dev = s->dev[u->dev].d;
    x.dst.dptr = u->dptr;
    return x;
}

/* Wake every thread waiting for a load to finish (a prefetch batch, a demand load, queued copies).
 */
static void loads_changed(tl_session *s) {
    tl__os_mutex_lock(&s->pmu);
    s->pgen++;
    tl__os_cond_broadcast(&s->pcv);
    tl__os_mutex_unlock(&s->pmu);
}

/*
 * Loads onto a device with async copies only queue work there (ordered with
 * the caller's own device work; acquire waits for the tickets before handing
 * the tensors out). The units are "loading" (pinned, memory reserved); the
 * copies are queued with the lock released, as a slow queue (a staging ring
 * draining) must not stop other threads, then each unit is loaded, or given
 * back from the first failure on. Called with the lock held; returns with it.
 */
static tl_status issue_async_locked(tl_session *s, const size_t *ids, size_t n, bool prefetch) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    tl__io_xfer *x = tl__os_malloc((n ? 2 * n : 1) * sizeof *x);
    uint64_t *tk = tl__os_calloc(n ? n : 1, sizeof *tk);
    tl_status st = TL_OK;
    size_t ok = 0, nf = 0;
    if (!x || !tk) {
        st = tl__err(TL_ERR_NOMEM, "session: out of memory");
    } else {
        for (size_t i = 0; i < n; i++) {
            x[i] = load_xfer(s, &s->u[ids[i]]);
            x[i].ticket = &tk[i];
            nf += pin_prepare_locked(s, &s->u[ids[i]], &x[n + nf]);
        }
        tl__os_mutex_unlock(&s->mu);
        if (nf) st = tl__io_run(s->io, x + n, nf, TL_IO_DEMAND); /* pinned copies first */
        for (; ok < n && !st; ok++) {
            st = tl__io_issue(s->io, &x[ok], 1);
            if (st) break;
        }
        tl__os_mutex_lock(&s->mu);
    }
    for (size_t i = 0; i < n; i++) {
        unit *u = &s->u[ids[i]];
        if (i < ok) {
            u->ticket = tk[i];
            loaded_locked(s, u, prefetch);
        } else {
            unload_failed_locked(s, u);
        }
    }
    free(x);
    free(tk);
    loads_changed(s);
    return st;
}

/* Collect the units of a range (in tensor order). */
static tl_status range_units(const tl_session *s, tl_component c, size_t lb, size_t le,
                             bool with_other, size_t **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if ((unsigned)c >= TL_COMP_COUNT)
        return tl__err(TL_ERR_INVALID_ARG, "session: bad component %d", (int)c);
    size_t nl = tl_model_layer_count(s->m, c);
    if (le == TL_ALL_LAYERS) le = nl;
    if (lb > le || le > nl)
        return tl__err(TL_ERR_INVALID_ARG,
                       "session: layers [%zu, %zu) of %s: %s has %zu layers (begin <= end <= %zu, "
                       "or end TL_ALL_LAYERS)",
                       lb, le, tl_component_name(c), tl_component_name(c), nl, nl);
    size_t cnt = 0;
    const size_t *idx;
    for (size_t k = lb; k <= le; k++) {
        if (k == le && !with_other) break;
        size_t nt = k < le ? tl_model_layer_tensors(s->m, c, k, &idx)
                           : tl_model_other_tensors(s->m, c, &idx);
        for (size_t j = 0; j < nt; j++)
            cnt += s->first[idx[j] + 1] - s->first[idx[j]];
    }
    size_t *u = tl__os_malloc((cnt ? cnt : 1) * sizeof *u);
    if (!u) return tl__err(TL_ERR_NOMEM, "session: out of memory");
    size_t w = 0;
    for (size_t k = lb; k <= le; k++) {
        if (k == le && !with_other) break;
        size_t nt = k < le ? tl_model_layer_tensors(s->m, c, k, &idx)
                           : tl_model_other_tensors(s->m, c, &idx);
        for (size_t j = 0; j < nt; j++)
            for (size_t q = s->first[idx[j]]; q < s->first[idx[j] + 1]; q++)
                u[w++] = q;
    }
    *out = u;
    *n = w;
    return TL_OK;
}

/* Prefetch completion: runs on an engine worker, which must never wait for mu. */
static void pf_done(void *user, tl__io_batch *b, tl_status err) {
    (void)b;
    pending *p = user;
    tl_session *s = p->s;
    tl__os_mutex_lock(&s->pmu);
    p->done = true;
    p->err = err;
    if (err) snprintf(p->errmsg, sizeof p->errmsg, "%s", tl_last_error());
    s->pgen++;
    tl__os_cond_broadcast(&s->pcv);
    tl__os_mutex_unlock(&s->pmu);
}

/* Apply finished prefetch batches to the units' state. */
static void reap_locked(tl_session *s) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    pending **pp = &s->pend;
    while (*pp) {
        pending *p = *pp;
        tl__os_mutex_lock(&s->pmu);
        bool done = p->done;
        tl__os_mutex_unlock(&s->pmu);
        if (!done) {
            pp = &p->next;
            continue;
        }
        for (size_t i = 0; i < p->n; i++) {
            unit *u = &s->u[p->units[i]];
            if (p->err)
                unload_failed_locked(s, u);
            else
                loaded_locked(s, u, true);
        }
        *pp = p->next;
        tl__io_batch_destroy(p->b);
        free(p->units);
        free(p);
        tl__os_cond_broadcast(&s->rcv); /* loading units became evictable */
    }
}

/* Wait (mu released) until some prefetch completes after generation gen. */
static void wait_prefetch_locked(tl_session *s, uint64_t gen) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    tl__os_mutex_unlock(&s->mu);
    tl__os_mutex_lock(&s->pmu);
    while (s->pgen == gen)
        tl__os_cond_wait(&s->pcv, &s->pmu);
    tl__os_mutex_unlock(&s->pmu);
    tl__os_mutex_lock(&s->mu);
}

static uint64_t pgen_now(tl_session *s) {
    tl__os_mutex_lock(&s->pmu);
    uint64_t g = s->pgen;
    tl__os_mutex_unlock(&s->pmu);
    return g;
}

/* What an acquire or a prefetch asks for: layers of a component, or a set of tensors. */
typedef struct want {
    tl_component c;
    size_t lb, le;
    bool with_other;
    const size_t *tensors; /* non-NULL: these tensors (catalog indexes), not the range */
    size_t n_tensors;
} want;

/*
 * The tensors of a set, each once, in the order given (malloc'd); an index
 * past the model is TL_ERR_INVALID_ARG naming the entry.
 */
static tl_status distinct_tensors(const tl_session *s, const size_t *t, size_t nt, size_t **out,
                                  size_t *n) {
    *out = NULL;
    *n = 0;
    size_t count = tl_model_tensor_count(s->m), w = 0;
    for (size_t i = 0; i < nt; i++)
        if (t[i] >= count)
            return tl__err(TL_ERR_INVALID_ARG,
                           "session: tensor set: entry %zu is tensor %zu; the model has %zu", i,
                           t[i], count);
    unsigned char *seen = tl__os_calloc(count ? count : 1, 1);
    size_t *d = tl__os_malloc((nt ? nt : 1) * sizeof *d);
    if (!seen || !d) {
        free(seen);
        free(d);
        return tl__err(TL_ERR_NOMEM, "session: out of memory");
    }
    for (size_t i = 0; i < nt; i++)
        if (!seen[t[i]]) {
            seen[t[i]] = 1;
            d[w++] = t[i];
        }
    free(seen);
    *out = d;
    *n = w;
    return TL_OK;
}

/* The units of distinct tensors t (n of them), in their order. */
static tl_status tensor_units(const tl_session *s, const size_t *t, size_t nt, size_t **out,
                              size_t *n) {
    size_t cnt = 0, w = 0;
    for (size_t i = 0; i < nt; i++)
        cnt += s->first[t[i] + 1] - s->first[t[i]];
    size_t *u = tl__os_malloc((cnt ? cnt : 1) * sizeof *u);
    if (!u) return tl__err(TL_ERR_NOMEM, "session: out of memory");
    for (size_t i = 0; i < nt; i++)
        for (size_t q = s->first[t[i]]; q < s->first[t[i] + 1]; q++)
            u[w++] = q;
    *out = u;
    *n = w;
    return TL_OK;
}

/* A set of tensors as a want (an empty list when tensors is NULL and n 0). */
static want set_want(const size_t *tensors, size_t n) {
    static const size_t none = 0;
    return (want){TL_COMP_OTHER, 0, 0, false, tensors ? tensors : &none, n};
}

static tl_status group_find_locked(tl_session *s, size_t *tensors, size_t n, const char *name,
                                   size_t *id);

/*
 * Lock the session and list the units it asks for; on failure the lock is
 * released again. *step: the step that the want is (a set: its group's; a
 * set past the groups' bounds: component TL_COMP_INVALID, no step).
 */
static tl_status enter(tl_session *s, const want *w, size_t **list, size_t *n,
                       tl_session_step *step) {
    tl__os_mutex_lock(&s->mu);
    reap_locked(s);
    *step = (tl_session_step){w->c, w->lb, w->le, w->with_other};
    tl_status st;
    if (w->tensors) {
        size_t *t = NULL, nt = 0, id = SIZE_MAX;
        st = distinct_tensors(s, w->tensors, w->n_tensors, &t, &nt);
        if (!st) st = tensor_units(s, t, nt, list, n);
        if (!st && nt) {
            if (group_find_locked(s, t, nt, NULL, &id)) /* takes t */
                tl__err_clear(); /* a set the groups cannot take: acquired all the same, no step */
        } else {
            free(t);
        }
        *step = id == SIZE_MAX ? (tl_session_step){TL_COMP_INVALID, 0, 0, false}
                               : (tl_session_step){TL_COMP_GROUP, id, id + 1, false};
    } else if (w->c == TL_COMP_GROUP) {
        if (w->lb >= s->n_gv || w->le != w->lb + 1 || w->with_other)
            st = tl__err(TL_ERR_INVALID_ARG,
                         "session: group step [%zu, %zu)%s: the session has %zu groups (a group "
                         "step is [id, id + 1) without other tensors)",
                         w->lb, w->le, w->with_other ? " with other" : "", s->n_gv);
        else
            st = tensor_units(s, s->gv[w->lb].tensors, s->gv[w->lb].n, list, n);
    } else {
        st = range_units(s, w->c, w->lb, w->le, w->with_other, list, n);
    }
    if (st) tl__os_mutex_unlock(&s->mu);
    return st;
}

/*
 * Room and memory on its device for unit u, which becomes "loading" (pinned,
 * its bytes counted). *ok false: the budget has no room without evicting
 * something in use (or, for a prefetch, something needed sooner).
 */
static tl_status reserve_locked(tl_session *s, unit *u, bool prefetch, bool *ok,
                                uint64_t *pool_short) {
    tl__os_mutex_assert_held(&s->mu);
    *pool_short = 0;
    /* a prefetch evicts only what is next used after the unit it loads */
    size_t before = prefetch && s->steps ? next_use_locked(s, u) : (size_t)-1;
    tl_status st = make_room_locked(s, u->dev, u->pl.len, before, ok);
    if (st || !*ok) return st;
    tlr_pool *pool = s->dev[u->dev].pool;
    if (!tlr_pool_take(pool, u->pl.len)) { /* the device's total for all sessions: the pool's */
        uint64_t used = tlr_pool_used(pool), total = tlr_pool_total(pool);
        *pool_short = used + u->pl.len > total ? used + u->pl.len - total : u->pl.len;
        *ok = false;
        return TL_OK;
    }
    st = alloc_locked(s, u, prefetch ? NULL : pool_short);
    if (st || *pool_short) {
        tlr_pool_give(pool, u->pl.len);
        *ok = !*pool_short;
        return st;
    }
    dev_add_locked(s, u->dev, u->pl.len);
    u->loading = true;
    heap_sync_locked(s, u);
    return TL_OK;
}

static tl_status prefetch_want(tl_session *s, const want *w) {
    if (!s) return tl__err(TL_ERR_INVALID_ARG, "tl_session_prefetch: NULL session");
    size_t *list, n;
    tl_session_step step;
    tl_status st = enter(s, w, &list, &n, &step);
    if (st) return st;
    pending *p = tl__os_calloc(1, sizeof *p);
    size_t *mine = tl__os_malloc((n ? n : 1) * sizeof *mine);
    tl__io_xfer *x = tl__os_malloc((n ? 2 * n : 1) * sizeof *x);
    tl__io_xfer *fills = x ? x + n : NULL;
    size_t nf = 0;
    if (!p || !mine || !x) {
        free(p);
        free(mine);
        free(x);
        free(list);
        tl__os_mutex_unlock(&s->mu);
        return tl__err(TL_ERR_NOMEM, "session: out of memory");
    }
    size_t k = 0, na = 0;
    s->prefetching = true;
    for (size_t i = 0; i < n && !st; i++) {
        unit *u = &s->u[list[i]];
        if (!on_device(s, u) || u->on_dev || u->loading || u->busy) continue;
        if (produces(s, u)) continue; /* made by the acquire that needs it */
        bool ok;
        uint64_t pool_short; /* a prefetch does not evict other sessions' units */
        st = reserve_locked(s, u, true, &ok, &pool_short);
        if (st || !ok) { /* best effort: what does not fit now is loaded on demand */
            if (st) tl__err_clear();
            st = TL_OK;
            s->st.prefetch_skipped++;
            continue;
        }
        if (async_load(s, u)) {
            list[na++] = list[i]; /* issued below (list is reused) */
            continue;
        }
        x[k] = load_xfer(s, u);
        mine[k++] = list[i];
        nf += pin_prepare_locked(s, u, &fills[nf]);
    }
    /* every eviction (a device free waits for the device's queue) before any copy is queued */
    if (st) {
        for (size_t i = 0; i < na; i++)
            unload_failed_locked(s, &s->u[list[i]]);
    } else if (na) {
        st = issue_async_locked(s, list, na, true);
    }
    free(list);
    if (k && !st) {
        memmove(x + k, fills, nf * sizeof *x); /* pinned copies filled in the same batch */
        p->s = s;
        p->units = mine;
        p->n = k;
        p->next = s->pend;
        s->pend = p;
        st = tl__io_submit(s->io, x, k + nf, TL_IO_PREFETCH, pf_done, p, &p->b);
        if (!st) {
            p = NULL; /* the batch's now: reaped when it completes */
            mine = NULL;
        } else {
            s->pend = p->next;
        }
    }
    if (mine) /* not submitted: give the reserved memory back */
        for (size_t i = 0; i < k; i++)
            unload_failed_locked(s, &s->u[mine[i]]);
    free(p);
    free(mine);
    free(x);
    tl__os_mutex_unlock(&s->mu);
    return st;
}

tl_status tl_session_prefetch(tl_session *s, tl_component c, size_t lb, size_t le,
                              bool with_other) {
    want w = {c, lb, le, with_other, NULL, 0};
    return prefetch_want(s, &w);
}

tl_status tl_session_prefetch_tensors(tl_session *s, const size_t *tensors, size_t n) {
    if (!tensors && n) return tl__err(TL_ERR_INVALID_ARG, "tl_session_prefetch_tensors: NULL list");
    want w = set_want(tensors, n);
    return prefetch_want(s, &w);
}

tl_status tl_session_ready(tl_session *s, tl_component c, size_t lb, size_t le, bool with_other,
                           bool *ready) {
    if (!s || !ready) return tl__err(TL_ERR_INVALID_ARG, "tl_session_ready: NULL argument");
    *ready = false;
    size_t *list, n;
    want w = {c, lb, le, with_other, NULL, 0};
    tl_session_step step;
    tl_status st = enter(s, &w, &list, &n, &step);
    if (st) return st;
    bool all = true;
    for (size_t i = 0; i < n && all; i++) {
        const unit *u = &s->u[list[i]];
        if (u->busy) {
            all = false;
            continue;
        }
        if (!on_device(s, u)) continue;
        if (!u->on_dev) {
            all = false;
        } else if (u->ticket) {
            bool done = false;
            st = tl_device_poll(s->dev[u->dev].d, u->ticket, &done);
            all = st == TL_OK && done;
        }
    }
    tl__os_mutex_unlock(&s->mu);
    free(list);
    *ready = st == TL_OK && all;
    return st;
}

/* Wait for the tickets of async copies into units (lock not held). */
static tl_status wait_tickets(tl_session *s, uint64_t *tick) {
    for (size_t d = 0; d < s->n_dev; d++)
        if (tick[d]) {
            tl_status st = tl_device_wait(s->dev[d].d, tick[d]);
            if (st) return st;
        }
    return TL_OK;
}

static void unref_locked(tl_session *s, const size_t *list, size_t n) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    bool freed = false; /* a unit became evictable */
    bool dev[TL_PLAN_MAX_DEVICES] = {false};
    for (size_t i = 0; i < n; i++) {
        unit *u = &s->u[list[i]];
        if (u->refs && --u->refs == 0) {
            heap_sync_locked(s, u);
            freed = true;
            if (on_device(s, u)) dev[u->dev] = true;
        }
    }
    for (size_t d = 0; d < s->n_dev; d++)
        if (dev[d]) {
            shrink_locked(s, (int32_t)d); /* over a budget lowered while they were held */
            tlr_pool_notify(s->dev[d].pool); /* acquires of other sessions waiting for room */
        }
    if (freed && s->wq_head) tl__os_cond_broadcast(&s->rcv); /* acquires waiting for room */
}

/* The evictable units of group g re-placed in their heaps (their next use changed). */
static void replace_group_locked(tl_session *s, size_t g) {
    for (size_t k = s->gfirst[g]; k < s->gfirst[g + 1]; k++) {
        unit *u = &s->u[s->gunits[k]];
        if (u->hpos != NOT_EVICTABLE) heap_sync_locked(s, u);
    }
}

/* ... of the groups of a step (as tlr_step_has counts them). */
static void replace_step_units_locked(tl_session *s, const tl_session_step *st) {
    if (st->component == TL_COMP_GROUP) {
        const sgroup *G = st->layer_begin < s->n_gv ? &s->gv[st->layer_begin] : NULL;
        for (size_t i = 0; G && i < G->n; i++)
            for (size_t q = s->first[G->tensors[i]]; q < s->first[G->tensors[i] + 1]; q++)
                if (s->u[q].hpos != NOT_EVICTABLE) heap_sync_locked(s, &s->u[q]);
        return;
    }
    int c = (int)st->component;
    if (c < 0 || c >= TL_COMP_COUNT) return;
    size_t b = s->groups.base[c], nl = s->groups.n_layers[c];
    size_t le = st->layer_end == TL_ALL_LAYERS || st->layer_end > nl ? nl : st->layer_end;
    for (size_t k = st->layer_begin; k < le; k++)
        replace_group_locked(s, b + k);
    if (st->with_other) replace_group_locked(s, b + nl);
}

static bool step_eq(const tl_session_step *a, const tl_session_step *b) {
    return a->component == b->component && a->layer_begin == b->layer_begin &&
           a->layer_end == b->layer_end && a->with_other == b->with_other;
}

static tl_status loop_install_locked(tl_session *s, tl_session_step *pass, size_t n, size_t pos);

/* Are passes x and y of rec (indexes into seg) the same steps? */
static bool seg_eq(const tl_session *s, size_t x, size_t y) {
    size_t lx = s->seg[x + 1] - s->seg[x], ly = s->seg[y + 1] - s->seg[y];
    if (lx != ly) return false;
    for (size_t i = 0; i < lx; i++)
        if (!step_eq(&s->rec[s->seg[x] + i], &s->rec[s->seg[y] + i])) return false;
    return true;
}

/*
 * The loop from the passes kept: the shortest period P (1..LEARN_PERIOD passes) whose last P passes
 * repeat the P before them; else the shortest P whose last pass repeats the pass P before it (the
 * passes seen are too few to check more); else the last min(passes, LEARN_PERIOD) passes (a guess
 * the next passes correct). Installed with the next step at pos.
 */
static void learn_install_locked(tl_session *s, size_t pos) {
    size_t n = s->n_seg, period = 0;
    for (size_t q = 1; q <= LEARN_PERIOD && 2 * q <= n && !period; q++) {
        bool same = true;
        for (size_t i = 0; i < q && same; i++)
            same = seg_eq(s, n - 1 - i, n - 1 - q - i);
        if (same) period = q;
    }
    for (size_t q = 1; q <= LEARN_PERIOD && q < n && !period; q++)
        if (seg_eq(s, n - 1, n - 1 - q)) period = q;
    if (!period) period = n < LEARN_PERIOD ? n : LEARN_PERIOD;
    size_t from = s->seg[n - period], len = s->seg[n] - from;
    tl_session_step *pass = tl__os_malloc(len * sizeof *pass);
    if (!pass) { /* learning stops; the loop so far stays */
        s->learn = false;
        return;
    }
    memcpy(pass, &s->rec[from], len * sizeof *pass);
    if (loop_install_locked(s, pass, len, pos % len)) s->learn = false;
}

/* Record one step, growing rec (at most LEARN_MAX_STEPS); false when it cannot. */
static bool rec_push(tl_session *s, const tl_session_step *now) {
    if (s->n_rec == s->cap_rec) {
        size_t cap = s->cap_rec ? 2 * s->cap_rec : 64;
        tl_session_step *r = cap <= LEARN_MAX_STEPS ? tl__os_realloc(s->rec, cap * sizeof *r) : NULL;
        if (!r) return false;
        s->rec = r;
        s->cap_rec = cap;
    }
    s->rec[s->n_rec++] = *now;
    return true;
}

/*
 * Learning, as long as it is on. First, each acquire is recorded until a step repeats — rec[cand]
 * equals the new step, the earliest such — and the step after confirms it (it equals
 * rec[cand + 1]): passes start with those two steps (b0, b1), rec[cand..repeat) is the first pass
 * and becomes the loop (a block acquired twice in a row makes a candidate the next step rejects;
 * steps before the first pass, a text encoder's, are dropped). From then on each pass is
 * recorded too, and at each pass's end the loop becomes the period the passes show (every other
 * diffusion step skipping blocks: two passes), so a run whose passes differ is predicted as it
 * goes. Nothing repeating within LEARN_MAX_STEPS: learning stops with no schedule.
 */
static void learn_locked(tl_session *s, const tl_session_step *now) {
    tl__os_mutex_assert_held(&s->mu);
    if (s->bound) {
        if (!rec_push(s, now)) {
            s->learn = false;
            return;
        }
        size_t n = s->n_rec;
        if (n - s->seg[s->n_seg] < 3 || !step_eq(&s->rec[n - 2], &s->b0) ||
            !step_eq(&s->rec[n - 1], &s->b1))
            return;
        /* a pass ended at n - 2: keep the last LEARN_SEGS, then the loop anew */
        if (s->n_seg == LEARN_SEGS) {
            size_t drop = s->seg[1];
            memmove(s->rec, s->rec + drop, (n - drop) * sizeof *s->rec);
            s->n_rec -= drop;
            for (size_t i = 0; i < LEARN_SEGS; i++)
                s->seg[i] = s->seg[i + 1] - drop;
            s->n_seg--;
        }
        s->seg[++s->n_seg] = s->n_rec - 2;
        learn_install_locked(s, 2);
        return;
    }
    if (s->cand != SIZE_MAX) {
        size_t len = s->cand_end - s->cand;
        if (step_eq(now, &s->rec[s->cand + (len > 1)])) {
            /* rec: [before the pass][pass 0][b0 (the repeat)] + now */
            size_t drop = s->cand;
            memmove(s->rec, s->rec + drop, (s->n_rec - drop) * sizeof *s->rec);
            s->n_rec -= drop;
            s->b0 = s->rec[0];
            s->b1 = *now;
            s->bound = true;
            s->cand = SIZE_MAX;
            if (!rec_push(s, now)) {
                s->learn = false;
                return;
            }
            s->seg[0] = 0;
            s->seg[1] = len;
            s->n_seg = 1;
            learn_install_locked(s, 2);
            return;
        }
        s->cand = SIZE_MAX;
    }
    for (size_t j = 0; j < s->n_rec; j++)
        if (step_eq(&s->rec[j], now)) {
            s->cand = j;
            s->cand_end = s->n_rec;
            break;
        }
    if (!rec_push(s, now)) s->learn = false; /* nothing repeats within the bound (or no memory) */
}

static void advance_schedule_locked(tl_session *s, const tl_session_step *step) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    tl_session_step now = *step;
    if (s->learn) {
        size_t passes = s->n_seg;
        bool bound = s->bound;
        learn_locked(s, &now);
        if (!bound || s->n_seg != passes) return; /* no loop yet, or installed at this step */
    }
    for (size_t i = s->pos; i < s->n_steps; i++) {
        if (step_eq(&s->steps[i], &now)) {
            size_t from = s->pos;
            s->pos = i + 1;
            if (s->n_pass && s->pos >= s->n_pass) { /* a loop: back into its first copy */
                s->pos %= s->n_pass;
                heap_rebuild_locked(s);
                return;
            }
            if (s->furthest) /* units used by the steps passed have a later next use now */
                for (size_t j = from; j <= i; j++)
                    replace_step_units_locked(s, &s->steps[j]);
            return;
        }
    }
}

static tl_status build_acquired(tl_session *s, size_t *list, size_t n, tl_acquired **out);

/* Reference the units of an acquire, once none is busy (waiting for updates to end). */
static void take_refs_locked(tl_session *s, const size_t *list, size_t n) {
    tl__os_mutex_assert_held(&s->mu);
    /*
     * All of them free at once: while this waits for one, an update may begin
     * on another already looked at (it holds no reference yet), so look at
     * all again after each wait.
     */
    for (size_t i = 0; i < n;) {
        if (!s->u[list[i]].busy) {
            i++;
            continue;
        }
        tl__os_cond_wait(&s->bcv, &s->mu);
        i = 0;
    }
    for (size_t i = 0; i < n; i++)
        if (s->u[list[i]].refs++ == 0) heap_sync_locked(s, &s->u[list[i]]);
    s->acquiring_refs += n;
}

/* Bytes of device d held by referenced or loading units (what no eviction can free). */
static uint64_t held_locked(const tl_session *s, int32_t d) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    return s->dev[d].used - s->dev[d].evictable; /* used: units on it or loading */
}

static void room_leave_locked(tl_session *s, room_waiter *w) {
    tl__os_mutex_assert_held(&s->mu);
    room_waiter **pp = &s->wq_head, *prev = NULL;
    while (*pp && *pp != w) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp) return;
    *pp = w->next;
    if (s->wq_tail == w) s->wq_tail = prev;
    tl__os_cond_broadcast(&s->rcv); /* the next in line may go */
}

tl_status tl_session_acquire(tl_session *s, tl_component c, size_t lb, size_t le, bool with_other,
                             tl_acquired **out) {
    return tl_session_acquire_wait(s, c, lb, le, with_other, 0, out);
}

/* Has tl_session_cancel been called since an acquire that saw generation cgen began? */
static bool cancel_asked(tl_session *s, uint64_t cgen) {
    return atomic_load(&s->cancel_gen) != cgen;
}

static tl_status cancelled_err(bool by_callback) {
    return tl__err(TL_ERR_CANCELLED, "session: acquire cancelled by %s",
                   by_callback ? "the progress callback" : "tl_session_cancel");
}

/* Report an acquire's progress (lock not held); false: the callback asked to stop. */
static bool report_progress(const tl_session *s, uint64_t done, uint64_t total) {
    return !s->o.progress || s->o.progress(s->o.progress_user, done, total);
}

/*
 * Run an acquire's loads (lock not held), reporting progress about every
 * 50 ms. A cancel stops handing out chunks (those being copied finish) and
 * the batch fails with TL_ERR_CANCELLED: at once for tl_session_cancel,
 * which finds the batch listed on the session.
 */
static tl_status run_loads(tl_session *s, const tl__io_xfer *x, size_t n, uint64_t cgen,
                           uint64_t total, bool *by_callback) {
    tl__io_batch *b;
    tl_status st = tl__io_submit(s->io, x, n, TL_IO_DEMAND, NULL, NULL, &b);
    if (st) return st;
    demand me = {b, NULL};
    tl__os_mutex_lock(&s->mu);
    me.next = s->demands;
    s->demands = &me;
    bool stop = cancel_asked(s, cgen); /* a cancel before the batch was listed */
    if (stop) tl__io_cancel(b);
    tl__os_mutex_unlock(&s->mu);
    for (;;) {
        bool done;
        tl__io_wait(b, 0.05, &done);
        if (done) break;
        if (stop) continue;
        if (cancel_asked(s, cgen))
            stop = true;
        else if (!report_progress(s, tl__io_done_bytes(b), total))
            stop = *by_callback = true;
        if (stop) tl__io_cancel(b);
    }
    tl__os_mutex_lock(&s->mu);
    demand **pp = &s->demands;
    while (*pp != &me)
        pp = &(*pp)->next;
    *pp = me.next;
    stop |= cancel_asked(s, cgen);
    tl__os_mutex_unlock(&s->mu);
    st = tl__io_status(b);
    tl__io_batch_destroy(b);
    if (stop) st = cancelled_err(*by_callback);
    return st;
}

/*
 * A cancelled acquire (its references dropped) returns the memory of the
 * units it loaded that nobody else references, counts the cancel and sets
 * the message.
 */
static void cancel_return_locked(tl_session *s, const size_t *mine, size_t n_mine,
                                 bool by_callback) {
    tl__os_mutex_assert_held(&s->mu);
    for (size_t i = 0; i < n_mine; i++) {
        unit *u = &s->u[mine[i]];
        if (!u->refs && u->on_dev && !u->loading && !u->busy) (void)evict_unit_locked(s, u);
    }
    s->st.acquire_cancels++;
    cancelled_err(by_callback);
}

tl_status tl_session_cancel(tl_session *s) {
    if (!s) return tl__err(TL_ERR_INVALID_ARG, "tl_session_cancel: NULL session");
    tl__os_mutex_lock(&s->mu);
    atomic_fetch_add(&s->cancel_gen, 1);
    for (pending *p = s->pend; p; p = p->next) /* prefetch batches: reaped as failed */
        tl__io_cancel(p->b);
    for (demand *d = s->demands; d; d = d->next) /* acquires' loads: no more chunks */
        tl__io_cancel(d->b);
    tl__os_cond_broadcast(&s->rcv); /* acquires waiting for room */
    tl__os_mutex_unlock(&s->mu);
    tl__os_mutex_lock(&s->pmu); /* acquires waiting for a prefetch */
    s->pgen++;
    tl__os_cond_broadcast(&s->pcv);
    tl__os_mutex_unlock(&s->pmu);
    return TL_OK;
}

static tl_status acquire_want(tl_session *s, const want *w, uint32_t timeout_ms,
                              tl_acquired **out) {
    if (!out) return tl__err(TL_ERR_INVALID_ARG, "tl_session_acquire: out is NULL");
    *out = NULL;
    if (!s) return tl__err(TL_ERR_INVALID_ARG, "tl_session_acquire: NULL session");
    size_t *list, n;
    tl_session_step step;
    tl_status st = enter(s, w, &list, &n, &step);
    if (st) return st;
    uint64_t cgen = atomic_load(&s->cancel_gen); /* cancels from here on end this acquire */
    /* tensors whose bytes are being changed: wait until the update ends */
    take_refs_locked(s, list, n);
    s->acquiring++;
    bool by_callback = false; /* the progress callback asked to stop */
    size_t n_mine = 0;        /* units this acquire loaded (mine[0, n_mine)) */
    uint64_t moved = 0;       /* bytes its loads move (for progress) */
    double deadline = tl__os_now() + timeout_ms / 1000.0;
    room_waiter me = {NULL};
    bool queued = false, holding = true; /* holding: the references are taken */
    tl__io_xfer *x = tl__os_malloc((n ? 2 * n : 1) * sizeof *x);
    size_t *mine = tl__os_malloc((n ? n : 1) * sizeof *mine);
    size_t *asy = tl__os_malloc((n ? n : 1) * sizeof *asy);
    size_t *made = tl__os_malloc((n ? n : 1) * sizeof *made); /* units the producer makes */
    size_t nf = 0;
    size_t na = 0;
    if (!x || !mine || !asy || !made) st = tl__err(TL_ERR_NOMEM, "session: out of memory");
    bool hit_counted = false;
    unsigned pool_tries = 0; /* evictions across sessions asked of a pool by this acquire */
    while (!st) {
        int32_t room_dev = TLR_HOST; /* set: wait for room on this device, then try again */
        int32_t pool_dev = TLR_HOST; /* set: the device's pool is short; evict there, then retry */
        uint64_t pool_need = 0;
        na = 0;
        if (cancel_asked(s, cgen)) {
            st = cancelled_err(false);
            break;
        }
        /* wait for prefetches in flight into this range */
        uint64_t gen = pgen_now(s);
        reap_locked(s);
        bool waiting = false, prefetched = false;
        for (size_t i = 0; i < n; i++) {
            waiting |= s->u[list[i]].loading;
            prefetched |= s->u[list[i]].prefetched || s->u[list[i]].loading;
        }
        if ((waiting || prefetched) && !hit_counted) {
            s->st.prefetch_hits++;
            hit_counted = true;
        }
        if (waiting) {
            wait_prefetch_locked(s, gen);
            continue;
        }
        size_t k = 0, kx = 0, np = 0; /* units loaded here; of them moved by the mover, made */
        nf = 0;
        for (size_t i = 0; i < n && !st; i++) {
            unit *u = &s->u[list[i]];
            if (!on_device(s, u) || u->on_dev) continue;
            /* a waiting acquire takes no room while others wait before it (arrival order) */
            bool ok = false, behind = timeout_ms && s->wq_head && s->wq_head != &me;
            uint64_t pshort = 0;
            if (!behind) st = reserve_locked(s, u, false, &ok, &pshort);
            if (st) break;
            if (!ok && pshort && pool_tries < POOL_TRIES) {
                /* room for the rest of the acquire on that device, in one round */
                uint64_t rest = 0, room = tlr_pool_room(s->dev[u->dev].pool);
                for (size_t q = i; q < n; q++) {
                    const unit *r = &s->u[list[q]];
                    if (r->dev == u->dev && on_device(s, r) && !r->on_dev && !r->loading)
                        rest += r->pl.len;
                }
                pool_dev = u->dev;
                pool_need = rest > room && rest - room > pshort ? rest - room : pshort;
                break;
            }
            if (!ok) {
                sdev *v = &s->dev[u->dev];
                uint64_t total = tlr_pool_total(v->pool);
                char a[32], b[32], h[32], wb[32];
                uint64_t need = 0; /* what this acquire needs on that device, all at once */
                for (size_t q = 0; q < n; q++)
                    if (s->u[list[q]].dev == u->dev && on_device(s, &s->u[list[q]]))
                        need += s->u[list[q]].pl.len;
                if (need > v->budget) /* no release can help: fail at once, waiting or not */
                    st = tl__err(TL_ERR_DEVICE_OOM,
                                 "%s: tensor %s: this acquire needs %s on %s at once, more than "
                                 "its budget of %s: it can never fit",
                                 fpath(s, u), tname(s, u), tl_fmt_bytes(need, wb, sizeof wb),
                                 tl_device_name(v->d), tl_fmt_bytes(v->budget, b, sizeof b));
                else if (pshort && total && need > total)
                    st = tl__err(TL_ERR_DEVICE_OOM,
                                 "%s: tensor %s: this acquire needs %s on %s at once, more than "
                                 "the device's budget for all sessions (%s): it can never fit",
                                 fpath(s, u), tname(s, u), tl_fmt_bytes(need, wb, sizeof wb),
                                 tl_device_name(v->d), tl_fmt_bytes(total, b, sizeof b));
                else if (timeout_ms == 0 && pshort)
                    st = tl__err(TL_ERR_DEVICE_OOM,
                                 "%s: tensor %s (%s) does not fit on %s: %s are used there by "
                                 "every session together (budget for all: %s) and none has "
                                 "unreferenced weights left to give up",
                                 fpath(s, u), tname(s, u), tl_fmt_bytes(u->pl.len, a, sizeof a),
                                 tl_device_name(v->d),
                                 tl_fmt_bytes(tlr_pool_used(v->pool), h, sizeof h),
                                 total ? tl_fmt_bytes(total, b, sizeof b) : "none");
                else if (timeout_ms == 0)
                    st = tl__err(TL_ERR_DEVICE_OOM,
                                 "%s: tensor %s (%s) does not fit on %s: its budget is %s and %s "
                                 "are held by acquired or loading tensors",
                                 fpath(s, u), tname(s, u), tl_fmt_bytes(u->pl.len, a, sizeof a),
                                 tl_device_name(v->d), tl_fmt_bytes(v->budget, b, sizeof b),
                                 tl_fmt_bytes(held_locked(s, u->dev), h, sizeof h));
                else
                    room_dev = u->dev;
                break;
            }
            if (async_load(s, u)) {
                asy[na++] = list[i];
                continue;
            }
            if (produces(s, u)) { /* made by the producer below */
                made[np++] = list[i];
                mine[k++] = list[i];
                continue;
            }
            x[kx++] = load_xfer(s, u);
            mine[k++] = list[i];
            nf += pin_prepare_locked(s, u, &x[n + nf]);
        }
        if ((k || na) && !hit_counted && s->prefetching) s->st.prefetch_misses++;
        /* queue async copies only after every eviction (a device free waits for its queue) */
        if (st || room_dev != TLR_HOST || pool_dev != TLR_HOST) {
            for (size_t i = 0; i < na; i++)
                unload_failed_locked(s, &s->u[asy[i]]);
        } else if (na) {
            st = issue_async_locked(s, asy, na, false);
        }
        if (st) {
            for (size_t i = 0; i < k; i++)
                unload_failed_locked(s, &s->u[mine[i]]);
            break;
        }
        if (pool_dev != TLR_HOST) {
            /*
             * The device is full for all sessions together: this round's
             * reservations go back, and with the session's lock released
             * (the pool takes the sessions' locks one at a time) the pool
             * evicts across sessions in its order, asking the engine's
             * reclaim callback when that is not enough; then try again,
             * references kept. When nothing came free the next shortfall
             * waits (a timeout) or fails.
             */
            for (size_t i = 0; i < k; i++)
                unload_failed_locked(s, &s->u[mine[i]]);
            tlr_pool *pool = s->dev[pool_dev].pool;
            uint64_t freed = 0, reclaimed = 0;
            tl__os_mutex_unlock(&s->mu);
            tlr_pool_evict(pool, pool_need, true, &freed, &reclaimed);
            tl__os_mutex_lock(&s->mu);
            pool_tries = freed || reclaimed ? pool_tries + 1 : POOL_TRIES;
            continue;
        }
        if (room_dev == TLR_HOST) { /* loaded by this acquire: queued copies first, then mine */
            for (size_t i = 0; i < na; i++) {
                mine[k + i] = asy[i];
                moved += s->u[asy[i]].pl.len;
            }
            n_mine = na;
        }
        if (room_dev != TLR_HOST) {
            /*
             * Others hold the room. Wait holding nothing: this round's
             * reservations go back and the references drop (the units
             * loaded so far may be evicted meanwhile), so waiting acquires
             * never hold each other up. The first in line tries again
             * after each release (and at least every 50 ms).
             */
            for (size_t i = 0; i < k; i++)
                unload_failed_locked(s, &s->u[mine[i]]);
            unref_locked(s, list, n);
            s->acquiring_refs -= n;
            holding = false;
            if (!queued) {
                queued = true;
                s->st.acquire_waits++;
                if (s->wq_tail)
                    s->wq_tail->next = &me;
                else
                    s->wq_head = &me;
                s->wq_tail = &me;
            }
            double left;
            tlr_pool *wpool = s->dev[room_dev].pool;
            tlr_pool_waiting(wpool, true); /* other sessions' releases wake it from now on */
            do {
                left = deadline - tl__os_now();
                if (left <= 0) break;
                tl__os_cond_timedwait(&s->rcv, &s->mu, left < 0.05 ? left : 0.05);
            } while (s->wq_head != &me && !cancel_asked(s, cgen));
            tlr_pool_waiting(wpool, false);
            if (cancel_asked(s, cgen)) {
                st = cancelled_err(false);
                break;
            }
            if (left <= 0) {
                sdev *v = &s->dev[room_dev];
                char b[32], h[32];
                s->st.acquire_timeouts++;
                st = tl__err(TL_ERR_DEVICE_OOM,
                             "%s: waited %u ms for room on %s and none came: its budget is %s "
                             "and %s are held by acquired or loading tensors (a thread that "
                             "holds sets while it waits for more may be waiting for itself)",
                             tl_model_file(s->m, 0)->path, timeout_ms, tl_device_name(v->d),
                             tl_fmt_bytes(v->budget, b, sizeof b),
                             tl_fmt_bytes(held_locked(s, room_dev), h, sizeof h));
                break;
            }
            take_refs_locked(s, list, n);
            holding = true;
            pool_tries = 0;
            continue;
        }
        if (k == 0) {
            memmove(mine, mine + k, na * sizeof *mine);
            break;
        }
        memmove(x + kx, x + n, nf * sizeof *x); /* pinned copies filled alongside */
        for (size_t i = 0; i < kx + nf; i++)
            moved += x[i].len;
        for (size_t i = 0; i < np; i++)
            moved += s->u[made[i]].pl.len;
        tlr_producer prod = s->prod;
        tl__os_mutex_unlock(&s->mu);
        if (kx + nf) st = run_loads(s, x, kx + nf, cgen, moved, &by_callback);
        double err = 0;
        uint64_t device_merges = 0;
        for (size_t i = 0; i < np && !st; i++) { /* the units are loading: nothing moves them */
            const unit *u = &s->u[made[i]];
            const sdev *v = &s->dev[u->dev];
            double e = 0;
            bool dm = false;
            st = tlr_xform_produce(&prod, s->m, &u->pl, &u->x, s->io,
                                   v->host_ptr ? (void *)(uintptr_t)u->dptr : NULL, v->d, u->dptr,
                                   &e, &dm);
            if (e > err) err = e;
            device_merges += dm;
            if (!st && cancel_asked(s, cgen)) st = cancelled_err(false);
        }
        tl__os_mutex_lock(&s->mu);
        if (err > s->st.lora_max_error) s->st.lora_max_error = err;
        s->st.lora_device_merges += device_merges;
        for (size_t i = 0; i < k; i++) {
            unit *u = &s->u[mine[i]];
            if (st)
                unload_failed_locked(s, u);
            else
                loaded_locked(s, u, false);
        }
        if (st) /* the queued copies stay loaded (returned below on a cancel) */
            memmove(mine, mine + k, na * sizeof *mine);
        else
            n_mine = k + na;
        loads_changed(s); /* other acquires may wait for these units */
        break;
    }
    free(x);
    free(asy);
    free(made);
    if (queued) room_leave_locked(s, &me);
    if (st) {
        if (holding) {
            unref_locked(s, list, n);
            s->acquiring_refs -= n;
        }
        if (st == TL_ERR_CANCELLED) cancel_return_locked(s, mine, n_mine, by_callback);
        s->acquiring--;
        free(list);
        free(mine);
        tl__os_mutex_unlock(&s->mu);
        return st;
    }
    uint64_t tick[TL_PLAN_MAX_DEVICES] = {0};
    for (size_t i = 0; i < n; i++) {
        unit *u = &s->u[list[i]];
        u->last_use = use_tick();
        u->prefetched = false;
        if (u->ticket && on_device(s, u) && u->ticket > tick[u->dev]) tick[u->dev] = u->ticket;
    }
    if (step.component != TL_COMP_INVALID) advance_schedule_locked(s, &step);
    event_locked(s, TL_EVENT_ACQUIRE, n ? &s->u[list[0]] : &s->u[0], TL_TIER_FILE, TL_TIER_DEVICE,
                 -1, 0);
    tl__os_mutex_unlock(&s->mu);
    st = wait_tickets(s, tick);
    if (!st && moved && !report_progress(s, moved, moved)) by_callback = true;
    if (!st && (by_callback || cancel_asked(s, cgen))) st = TL_ERR_CANCELLED;
    if (!st) st = build_acquired(s, list, n, out);
    if (st) {
        tl__os_mutex_lock(&s->mu);
        unref_locked(s, list, n);
        s->acquiring--;
        s->acquiring_refs -= n;
        if (st == TL_ERR_CANCELLED) cancel_return_locked(s, mine, n_mine, by_callback);
        tl__os_mutex_unlock(&s->mu);
        free(list);
    }
    free(mine);
    return st;
}

tl_status tl_session_acquire_wait(tl_session *s, tl_component c, size_t lb, size_t le,
                                  bool with_other, uint32_t timeout_ms, tl_acquired **out) {
    want w = {c, lb, le, with_other, NULL, 0};
    return acquire_want(s, &w, timeout_ms, out);
}

tl_status tl_session_acquire_tensors(tl_session *s, const size_t *tensors, size_t n,
                                     uint32_t timeout_ms, tl_acquired **out) {
    if (!tensors && n) return tl__err(TL_ERR_INVALID_ARG, "tl_session_acquire_tensors: NULL list");
    want w = set_want(tensors, n);
    return acquire_want(s, &w, timeout_ms, out);
}

tl_status tl_session_next_step(tl_session *s, tl_session_step *out) {
    if (!s || !out) return tl__err(TL_ERR_INVALID_ARG, "tl_session_next_step: NULL argument");
    tl__os_mutex_lock(&s->mu);
    bool have = s->pos < s->n_steps;
    if (have) *out = s->steps[s->pos];
    tl__os_mutex_unlock(&s->mu);
    return have ? TL_OK : tl__err(TL_ERR_NOT_FOUND, "session: no schedule, or at its end");
}

/* The set of the units in list (referenced by an acquire in flight): it becomes outstanding. */
static tl_status build_acquired(tl_session *s, size_t *list, size_t n, tl_acquired **out) {
    tl_acquired *a = header_get();
    if (!a) return tl__err(TL_ERR_NOMEM, "session: out of memory");
    a->parts = tl__os_calloc(n ? n : 1, sizeof *a->parts);
    a->t = tl__os_calloc(n ? n : 1, sizeof *a->t);
    if (!a->parts || !a->t) {
        free(a->parts);
        free(a->t);
        a->parts = NULL;
        a->t = NULL;
        header_put(a);
        return tl__err(TL_ERR_NOMEM, "session: out of memory");
    }
    a->owner = s;
    a->serial = s->serial;
    tl__os_mutex_lock(&s->mu);
    for (size_t i = 0; i < n; i++) {
        unit *u = &s->u[list[i]];
        tl_session_part *p = &a->parts[i];
        tl_tier tier;
        bool mapped;
        const unsigned char *h = host_src(s, u, &tier, &mapped);
        p->offset = u->pl.off;
        p->nbytes = u->pl.len;
        p->row_begin = u->pl.row_begin;
        p->row_end = u->pl.row_end;
        if (on_device(s, u)) {
            p->tier = TL_TIER_DEVICE;
            p->device = s->dev[u->dev].d;
            p->dptr = u->dptr;
        } else {
            p->tier = tier;
            p->host = h;
            if (u->dev != TLR_HOST) {
                p->device = s->dev[u->dev].d;
                p->dptr = (tl_devptr)(uintptr_t)h;
            }
        }
        size_t t = u->pl.tensor;
        if (a->n == 0 || a->t[a->n - 1].index != t) {
            const tl_tensor_info *ti = s->xinfo && s->xinfo[t].name ? &s->xinfo[t]
                                                                   : tl_model_tensor(s->m, t);
            a->t[a->n] = (tl_session_tensor){t, ti, 0, p};
            a->n++;
        }
        a->t[a->n - 1].n_parts++;
    }
    a->units = list;
    a->n_units = n;
    /* from an acquire in flight to an outstanding set, in one step for tl_session_check */
    s->acquiring--;
    s->acquiring_refs -= n;
    a->prev = NULL;
    a->next = s->sets;
    if (s->sets) s->sets->prev = a;
    s->sets = a;
    s->n_sets++;
    tl__os_mutex_unlock(&s->mu);
    tl__os_mutex_lock(&g_mu);
    a->live = true;
    tl__os_mutex_unlock(&g_mu);
    *out = a;
    return TL_OK;
}

size_t tl_acquired_count(const tl_acquired *a) {
    return a ? a->n : 0;
}

const tl_session_tensor *tl_acquired_tensor(const tl_acquired *a, size_t i) {
    return a && i < a->n ? &a->t[i] : NULL;
}

tl_status tl_acquired_part(const tl_acquired *a, size_t i, uint32_t q, tl_session_part *out,
                           size_t out_size) {
    if (!a || !out || !out_size || i >= a->n || q >= a->t[i].n_parts)
        return tl__err(TL_ERR_INVALID_ARG, "tl_acquired_part: NULL argument, size 0 or out of range");
    tl__copy_out(out, out_size, &a->t[i].parts[q], sizeof a->t[i].parts[q]);
    return TL_OK;
}

/* A claimed set leaves s (lock held): its references drop. */
static void unlist_locked(tl_session *s, tl_acquired *a) {
    tl__os_mutex_assert_held(&s->mu);
    unref_locked(s, a->units, a->n_units);
    if (a->prev)
        a->prev->next = a->next;
    else
        s->sets = a->next;
    if (a->next) a->next->prev = a->prev;
    s->n_sets--;
}

/* Free what a claimed, unlisted set holds and recycle its header. */
static void retire(tl_acquired *a) {
    tlr_acquired_unbind(a);
    free(a->units);
    free(a->parts);
    free(a->t);
    a->units = NULL;
    a->parts = NULL;
    a->t = NULL;
    a->n = a->n_units = 0;
    a->owner = NULL;
    header_put(a);
}

tl_status tl_session_release_fenced(tl_session *s, tl_acquired *a, tl_fence_wait_fn wait,
                                    void *arg) {
    if (!s || !a || !wait)
        return tl__err(TL_ERR_INVALID_ARG, "tl_session_release_fenced: NULL argument");
    fence *f = tl__os_calloc(1, sizeof *f);
    if (!f) return tl__err(TL_ERR_NOMEM, "session: out of memory");
    tl_status st = claim(s, a, "tl_session_release_fenced");
    if (st) {
        free(f);
        return st;
    }
    f->wait = wait;
    f->arg = arg;
    tl__os_mutex_lock(&s->mu);
    for (size_t i = 0; i < a->n_units; i++) {
        unit *u = &s->u[a->units[i]];
        if (!on_device(s, u)) continue; /* host tiers: nothing of theirs is reused */
        if (u->fence && u->fence != f) {
            tl_status w = fence_wait_locked(s, u); /* an older fence: it has to be over by now */
            if (w && !st) st = w;
        }
        if (!u->fence) {
            u->fence = f;
            f->holders++;
        }
    }
    if (!f->holders) free(f);
    unlist_locked(s, a);
    tl__os_mutex_unlock(&s->mu);
    retire(a);
    return st;
}

tl_status tl_session_release(tl_session *s, tl_acquired *a) {
    if (!a) return TL_OK;
    tl_status st = claim(s, a, "tl_session_release");
    if (st) return st;
    tl__os_mutex_lock(&s->mu);
    unlist_locked(s, a);
    tl__os_mutex_unlock(&s->mu);
    retire(a);
    return TL_OK;
}

/* --- eviction, dirt, schedule, stats --- */

static int32_t dev_by_name(const tl_session *s, const char *name) {
    for (size_t d = 0; d < s->n_dev; d++)
        if (!strcmp(s->st.devices[d].name, name) || !strcmp(tl_device_name(s->dev[d].d), name))
            return (int32_t)d;
    return TLR_HOST;
}

tl_status tl_session_evict(tl_session *s, const char *device, uint64_t bytes, uint64_t *freed) {
    if (freed) *freed = 0;
    if (!s || !device) return tl__err(TL_ERR_INVALID_ARG, "tl_session_evict: NULL argument");
    tl__os_mutex_lock(&s->mu);
    int32_t d = dev_by_name(s, device);
    if (d == TLR_HOST) {
        tl__os_mutex_unlock(&s->mu);
        return tl__err(TL_ERR_NOT_FOUND, "session: no device '%s' in this session", device);
    }
    uint64_t got = 0;
    tl_status st = TL_OK;
    /* each round evicts one unit, and no unit comes back meanwhile: at most n_u rounds */
    for (size_t round = 0; got < bytes && round < s->n_u; round++) {
        size_t k = choose_victim_locked(s, d);
        if (k == s->n_u) break;
        uint64_t len = s->u[k].pl.len;
        st = evict_unit_locked(s, &s->u[k]);
        if (st) break;
        got += len;
    }
    tl__os_mutex_unlock(&s->mu);
    if (freed) *freed = got;
    if (st) return st;
    if (got < bytes && bytes != UINT64_MAX) {
        char a[32], b[32];
        return tl__err(TL_ERR_DEVICE_OOM,
                       "%s: evicted %s of the %s asked: the rest is held by acquired or loading "
                       "tensors",
                       device, tl_fmt_bytes(got, a, sizeof a), tl_fmt_bytes(bytes, b, sizeof b));
    }
    return TL_OK;
}

/* --- budgets, priority, and what the device's pool asks of the session --- */

/* Device d's weight budget: the session's budget there less the largest reserve placed on it. */
static void budget_update_locked(tl_session *s, int32_t d) {
    tl__os_mutex_assert_held(&s->mu);
    sdev *v = &s->dev[d];
    uint64_t r = 0;
    for (int c = 0; c < TL_COMP_COUNT; c++)
        if (v->plan_index < 64 && (s->comp_devs[c] >> v->plan_index & 1) && s->comp_reserve[c] > r)
            r = s->comp_reserve[c];
    v->budget = v->base > r ? v->base - r : 0;
    shrink_locked(s, d);
}

tl_status tl_session_set_budget(tl_session *s, const char *device, uint64_t bytes) {
    if (!s || !device) return tl__err(TL_ERR_INVALID_ARG, "tl_session_set_budget: NULL argument");
    tl__os_mutex_lock(&s->mu);
    int32_t d = dev_by_name(s, device);
    if (d < 0) {
        tl__os_mutex_unlock(&s->mu);
        return tl__err(TL_ERR_NOT_FOUND, "tl_session_set_budget: the session has no device '%s'",
                       device);
    }
    s->dev[d].base = bytes;
    budget_update_locked(s, d);
    tl__os_cond_broadcast(&s->rcv); /* a larger budget: waiting acquires may fit now */
    tl__os_mutex_unlock(&s->mu);
    return TL_OK;
}

tl_status tl_session_set_reserve(tl_session *s, tl_component c, uint64_t bytes) {
    if (!s) return tl__err(TL_ERR_INVALID_ARG, "tl_session_set_reserve: NULL session");
    if ((unsigned)c >= TL_COMP_COUNT)
        return tl__err(TL_ERR_INVALID_ARG, "tl_session_set_reserve: bad component %d", (int)c);
    tl__os_mutex_lock(&s->mu);
    s->comp_reserve[c] = bytes;
    for (size_t d = 0; d < s->n_dev; d++)
        budget_update_locked(s, (int32_t)d);
    tl__os_cond_broadcast(&s->rcv);
    tl__os_mutex_unlock(&s->mu);
    return TL_OK;
}

tl_status tl_session_set_priority(tl_session *s, int priority) {
    if (!s) return tl__err(TL_ERR_INVALID_ARG, "tl_session_set_priority: NULL session");
    atomic_store(&s->priority, priority);
    return TL_OK;
}

static int32_t dev_of(const tl_session *s, const tl_device *d) {
    for (size_t i = 0; i < s->n_dev; i++)
        if (s->dev[i].d == d) return (int32_t)i;
    return -1;
}

bool tlr_session_victim(tl_session *s, tl_device *d, tlr_victim *out) {
    tl__os_mutex_lock(&s->mu);
    reap_locked(s);
    int32_t i = dev_of(s, d);
    size_t k = i < 0 ? s->n_u : victim_locked(s, i);
    if (k < s->n_u) {
        const unit *u = &s->u[k];
        size_t nu = next_use_locked(s, u);
        *out = (tlr_victim){atomic_load(&s->priority), s->furthest,
                            nu == (size_t)-1 ? UINT64_MAX : (uint64_t)(nu - s->pos), u->last_use,
                            u->pl.len};
    }
    tl__os_mutex_unlock(&s->mu);
    return k < s->n_u;
}

uint64_t tlr_session_evict_one(tl_session *s, tl_device *d) {
    tl__os_mutex_lock(&s->mu);
    int32_t i = dev_of(s, d);
    size_t k = i < 0 ? s->n_u : choose_victim_locked(s, i);
    uint64_t n = 0;
    if (k < s->n_u) {
        n = s->u[k].pl.len;
        if (evict_unit_locked(s, &s->u[k])) {
            tl__err_clear(); /* a dirty unit that could not be saved stays; the pool goes on */
            n = 0;
        }
    }
    tl__os_mutex_unlock(&s->mu);
    return n;
}

tl_status tl_session_evict_all(tl_session *s, const char *device, uint64_t *freed) {
    return tl_session_evict(s, device, UINT64_MAX, freed);
}

tl_status tl_session_mark_dirty(tl_session *s, size_t tensor) {
    if (!s || tensor >= tl_model_tensor_count(s->m))
        return tl__err(TL_ERR_INVALID_ARG, "tl_session_mark_dirty: bad session or tensor");
    tl__os_mutex_lock(&s->mu);
    tl_status st = TL_OK;
    for (size_t q = s->first[tensor]; q < s->first[tensor + 1] && !st; q++) {
        unit *u = &s->u[q];
        if (!u->refs) {
            st = tl__err(TL_ERR_INVALID_ARG, "tensor %s: mark it dirty while it is acquired",
                         tname(s, u));
        } else if (on_device(s, u)) {
            u->dirty = true;
            drop_copies_locked(s, u); /* they are stale now */
        } else if (!tl_model_tensor_patched(s->m, tensor)) {
            st = tl__err(TL_ERR_INVALID_ARG,
                         "tensor %s lives in the file's read-only mapping: patch it through "
                         "tl_model_tensor_data_mut on a model opened writable",
                         tname(s, u));
        }
    }
    tl__os_mutex_unlock(&s->mu);
    return st;
}

/* Drop every copy of a unit that is neither referenced nor loading (device, RAM, pinned, spill). */
static tl_status forget_locked(tl_session *s, unit *u) {
    tl__os_mutex_assert_held(&s->mu);
    tl_status st = fence_wait_locked(s, u);
    if (st) return st;
    if (u->on_dev) {
        sdev *v = &s->dev[u->dev];
        if (u->ticket) tl_device_wait(v->d, u->ticket);
        tl_device_free(v->d, u->dptr);
        dev_sub_locked(s, u->dev, u->pl.len);
        u->on_dev = u->dirty = false;
        heap_sync_locked(s, u);
        u->dptr = 0;
        u->ticket = 0;
    }
    drop_copies_locked(s, u);
    return TL_OK;
}

/* TL_OK when no unit of the tensors is referenced or loading (lock held). */
static tl_status idle_locked(tl_session *s, const size_t *tensors, size_t n, const char *fn) {
    tl__os_mutex_assert_held(&s->mu);
    for (size_t k = 0; k < n; k++)
        for (size_t q = s->first[tensors[k]]; q < s->first[tensors[k] + 1]; q++) {
            const unit *u = &s->u[q];
            if (u->refs || u->loading)
                return tl__err(TL_ERR_INVALID_ARG, "%s: tensor %s is %s: release it first", fn,
                               tname(s, u), u->refs ? "acquired" : "being loaded");
        }
    return TL_OK;
}

static tl_status tensors_ok(const tl_session *s, const size_t *tensors, size_t n, const char *fn) {
    if (!s || (n && !tensors)) return tl__err(TL_ERR_INVALID_ARG, "%s: NULL argument", fn);
    for (size_t k = 0; k < n; k++)
        if (tensors[k] >= tl_model_tensor_count(s->m))
            return tl__err(TL_ERR_INVALID_ARG, "%s: tensor %zu of a model of %zu", fn, tensors[k],
                           tl_model_tensor_count(s->m));
    return TL_OK;
}

tl_status tl_session_refresh(tl_session *s, size_t tensor) {
    tl_status st = tensors_ok(s, &tensor, 1, "tl_session_refresh");
    if (st) return st;
    tl__os_mutex_lock(&s->mu);
    reap_locked(s);
    st = idle_locked(s, &tensor, 1, "tl_session_refresh");
    for (size_t q = s->first[tensor]; q < s->first[tensor + 1] && !st; q++)
        st = forget_locked(s, &s->u[q]);
    tl__os_mutex_unlock(&s->mu);
    return st;
}

tl_status tl_session_update_begin(tl_session *s, const size_t *tensors, size_t n) {
    tl_status st = tensors_ok(s, tensors, n, "tl_session_update_begin");
    if (st) return st;
    tl__os_mutex_lock(&s->mu);
    reap_locked(s);
    st = idle_locked(s, tensors, n, "tl_session_update_begin");
    if (!st) {
        for (size_t k = 0; k < n; k++) {
            s->epoch[tensors[k]]++;
            for (size_t q = s->first[tensors[k]]; q < s->first[tensors[k] + 1]; q++)
                s->u[q].busy++;
        }
        for (size_t k = 0; k < n && !st; k++)
            for (size_t q = s->first[tensors[k]]; q < s->first[tensors[k] + 1] && !st; q++)
                st = forget_locked(s, &s->u[q]);
        if (st) { /* a failing fence: the update does not start */
            for (size_t k = 0; k < n; k++) {
                s->epoch[tensors[k]]--;
                for (size_t q = s->first[tensors[k]]; q < s->first[tensors[k] + 1]; q++)
                    s->u[q].busy--;
            }
            tl__os_cond_broadcast(&s->bcv);
        }
    }
    tl__os_mutex_unlock(&s->mu);
    return st;
}

tl_status tl_session_update_end(tl_session *s, const size_t *tensors, size_t n) {
    tl_status st = tensors_ok(s, tensors, n, "tl_session_update_end");
    if (st) return st;
    tl__os_mutex_lock(&s->mu);
    for (size_t k = 0; k < n && !st; k++)
        for (size_t q = s->first[tensors[k]]; q < s->first[tensors[k] + 1]; q++)
            if (!s->u[q].busy) {
                st = tl__err(TL_ERR_INVALID_ARG,
                             "tl_session_update_end: tensor %s is not being updated",
                             tname(s, &s->u[q]));
                break;
            }
    if (!st) {
        for (size_t k = 0; k < n; k++) {
            bool made = s->prod.rows && s->prod.wants(s->prod.user, tensors[k]);
            for (size_t q = s->first[tensors[k]]; q < s->first[tensors[k] + 1]; q++) {
                s->u[q].busy--;
                if (s->u[q].dev != TLR_HOST) s->u[q].produced = made; /* no copy while busy */
            }
        }
        tl__os_cond_broadcast(&s->bcv);
    }
    tl__os_mutex_unlock(&s->mu);
    return st;
}

tl_status tlr_session_producible(const tl_session *s, size_t t) {
    for (size_t q = s->first[t]; q < s->first[t + 1]; q++)
        if (s->u[q].dev == TLR_HOST) {
            const tl_tensor_info *ti = tl_model_tensor(s->m, t);
            return tl__err(TL_ERR_UNSUPPORTED,
                           "%s: tensor %s: the plan keeps it in host memory (the file's mapping "
                           "itself), where nothing can be made as it loads: place it on a "
                           "device, or merge into a writable model (tl_lora_apply)",
                           tl_model_file(s->m, ti->file)->path, ti->name);
        }
    return TL_OK;
}

tl_status tlr_session_set_producer(tl_session *s, const tlr_producer *p) {
    tl__os_mutex_lock(&s->mu);
    if (p && s->prod.rows) {
        tl__os_mutex_unlock(&s->mu);
        return tl__err(TL_ERR_INVALID_ARG, "session: an at-load LoRA set is attached already");
    }
    if (p) {
        s->prod = *p;
    } else {
        reap_locked(s);
        for (size_t i = 0; i < s->n_u; i++) {
            unit *u = &s->u[i];
            /* a copy still in use keeps its bytes (and its memory of its own) until evicted */
            if (u->produced && !u->refs && !u->loading && !u->busy && !u->dirty &&
                forget_locked(s, u) == TL_OK)
                u->produced = false;
        }
        s->prod = (tlr_producer){0};
    }
    tl__os_mutex_unlock(&s->mu);
    return TL_OK;
}

tl_status tl_session_set_dtype(tl_session *s, size_t tensor, tl_dtype dtype) {
    if (!s || tensor >= tl_model_tensor_count(s->m))
        return tl__err(TL_ERR_INVALID_ARG, "tl_session_set_dtype: bad session or tensor");
    const tl_tensor_info *ti = tl_model_tensor(s->m, tensor);
    tl_status st = tlr_xform_check(s->m, tensor, dtype);
    if (st) return st;
    if (dtype != ti->dtype && on_host(s, tensor))
        return tl__err(TL_ERR_UNSUPPORTED,
                       "%s: tensor %s: the plan keeps it in host memory (the file's mapping): "
                       "it stays %s there",
                       tl_model_file(s->m, ti->file)->path, ti->name, tl_dtype_name(ti->dtype));
    tl__os_mutex_lock(&s->mu);
    reap_locked(s);
    st = idle_locked(s, &tensor, 1, "tl_session_set_dtype");
    for (size_t q = s->first[tensor]; q < s->first[tensor + 1] && !st; q++) {
        const unit *u = &s->u[q];
        if (u->busy || u->dirty)
            st = tl__err(TL_ERR_INVALID_ARG, "tl_session_set_dtype: tensor %s is %s", ti->name,
                         u->busy ? "being updated" : "dirty (written on its device)");
    }
    for (size_t q = s->first[tensor]; q < s->first[tensor + 1] && !st; q++)
        st = forget_locked(s, &s->u[q]);
    if (!st) st = keep_as(s, tensor, dtype);
    tl__os_mutex_unlock(&s->mu);
    return st;
}

/* Learning on (recording from nothing) or off; what was recorded is forgotten either way. */
static void learn_reset_locked(tl_session *s, bool on) {
    tl__os_mutex_assert_held(&s->mu);
    s->learn = on;
    s->n_rec = 0;
    s->cand = SIZE_MAX;
    s->bound = false;
    s->n_seg = 0;
}

/* A schedule's copy and its per-group step lists, made outside the lock. */
typedef struct sched_made {
    tl_session_step *steps;
    size_t **uses, *n_uses;
    size_t ng; /* groups in uses */
} sched_made;

static void uses_free(size_t **uses, size_t *n_uses, size_t ng) {
    if (uses)
        for (size_t g = 0; g < ng; g++)
            free(uses[g]);
    free(uses);
    free(n_uses);
}

static void sched_free(sched_made *m) {
    uses_free(m->uses, m->n_uses, m->ng);
    free(m->steps);
}

/* Per group of gr, the indexes of the steps (total of them) that take it. */
static tl_status uses_make(const tlr_groups *gr, const tl_session_step *steps, size_t total,
                           sched_made *m) {
    m->ng = gr->n;
    m->uses = tl__os_calloc(m->ng ? m->ng : 1, sizeof *m->uses);
    m->n_uses = tl__os_calloc(m->ng ? m->ng : 1, sizeof *m->n_uses);
    bool ok = m->uses && m->n_uses;
    for (size_t g = 0; ok && g < m->ng; g++) {
        size_t cnt = 0;
        for (size_t i = 0; i < total; i++)
            cnt += tlr_step_has(gr, &steps[i], g);
        m->uses[g] = tl__os_malloc((cnt ? cnt : 1) * sizeof *m->uses[g]);
        if (!m->uses[g]) {
            ok = false;
            break;
        }
        for (size_t i = 0; i < total; i++)
            if (tlr_step_has(gr, &steps[i], g)) m->uses[g][m->n_uses[g]++] = i;
    }
    if (ok) return TL_OK;
    uses_free(m->uses, m->n_uses, m->ng);
    m->uses = NULL;
    m->n_uses = NULL;
    return tl__err(TL_ERR_NOMEM, "session: out of memory for the schedule");
}

/* steps (n of them) repeated `copies` times. */
static tl_status sched_make(const tl_session *s, const tl_session_step *steps, size_t n,
                            size_t copies, sched_made *m) {
    size_t total = n * copies;
    *m = (sched_made){0};
    m->steps = tl__os_malloc((total ? total : 1) * sizeof *m->steps);
    if (!m->steps) return tl__err(TL_ERR_NOMEM, "session: out of memory for the schedule");
    for (size_t i = 0; i < total; i++)
        m->steps[i] = steps[i % n];
    tl_status st = uses_make(&s->groups, m->steps, total, m);
    if (st) sched_free(m);
    return st;
}

/* Make m's uses the schedule's (the old ones freed), and the heaps again for them. */
static void uses_install_locked(tl_session *s, const sched_made *m) {
    tl__os_mutex_assert_held(&s->mu);
    uses_free(s->uses, s->n_uses, s->uses_ng);
    s->uses = m->uses;
    s->n_uses = m->n_uses;
    s->uses_ng = m->ng;
    heap_rebuild_locked(s);
}

/* Make m (total steps; 0: none) the schedule, the next step at pos; m is the session's now. */
static void sched_install_locked(tl_session *s, sched_made *m, size_t total, size_t pos) {
    tl__os_mutex_assert_held(&s->mu);
    free(s->steps);
    if (!total) {
        sched_free(m);
        *m = (sched_made){0};
    }
    s->steps = m->steps;
    s->n_steps = total;
    s->pos = pos;
    uses_install_locked(s, m);
}

tl_status tl_session_set_schedule(tl_session *s, const tl_session_step *steps, size_t n) {
    if (!s || (n && !steps)) return tl__err(TL_ERR_INVALID_ARG, "tl_session_set_schedule: NULL");
    sched_made m;
    tl_status st = sched_make(s, steps, n, 1, &m);
    if (st) return st;
    tl__os_mutex_lock(&s->mu);
    sched_install_locked(s, &m, n, 0);
    free(s->pass); /* an explicit schedule ends learning and loops */
    s->pass = NULL;
    s->n_pass = 0;
    learn_reset_locked(s, false);
    tl__os_mutex_unlock(&s->mu);
    return TL_OK;
}

/* Install pass (n steps, the session's to keep) as the repeating schedule, the next step at pos. */
static tl_status loop_install_locked(tl_session *s, tl_session_step *pass, size_t n, size_t pos) {
    tl__os_mutex_assert_held(&s->mu);
    sched_made m;
    tl_status st = sched_make(s, pass, n, LOOP_COPIES, &m);
    if (st) {
        free(pass);
        return st;
    }
    if (s->pass != pass) free(s->pass);
    s->pass = pass;
    s->n_pass = n;
    sched_install_locked(s, &m, n * LOOP_COPIES, pos);
    return TL_OK;
}

tl_status tl_session_set_loop(tl_session *s, const tl_session_step *steps, size_t n) {
    if (!s || (n && !steps)) return tl__err(TL_ERR_INVALID_ARG, "tl_session_set_loop: NULL");
    if (!n) return tl_session_set_schedule(s, NULL, 0);
    tl_session_step *cp = tl__os_malloc(n * sizeof *cp);
    if (!cp) return tl__err(TL_ERR_NOMEM, "session: out of memory for the loop");
    memcpy(cp, steps, n * sizeof *cp);
    tl__os_mutex_lock(&s->mu);
    learn_reset_locked(s, false);
    tl_status st = loop_install_locked(s, cp, n, 0);
    tl__os_mutex_unlock(&s->mu);
    return st;
}

tl_status tl_session_learn(tl_session *s, bool on) {
    if (!s) return tl__err(TL_ERR_INVALID_ARG, "tl_session_learn: NULL session");
    tl__os_mutex_lock(&s->mu);
    sched_made none = {0};
    sched_install_locked(s, &none, 0, 0); /* learning starts from no schedule */
    free(s->pass);
    s->pass = NULL;
    s->n_pass = 0;
    learn_reset_locked(s, on);
    tl__os_mutex_unlock(&s->mu);
    return TL_OK;
}

tl_status tl_session_optimal_bytes(const tl_session *s, uint64_t *bytes) {
    if (!s || !bytes) return tl__err(TL_ERR_INVALID_ARG, "tl_session_optimal_bytes: NULL");
    if (!s->steps) return tl__err(TL_ERR_INVALID_ARG, "session: no schedule set");
    tlr_opt_unit *u = tl__os_malloc((s->n_u ? s->n_u : 1) * sizeof *u);
    if (!u) return tl__err(TL_ERR_NOMEM, "session: out of memory");
    uint64_t budgets[TL_PLAN_MAX_DEVICES];
    for (size_t d = 0; d < s->n_dev; d++)
        budgets[d] = s->dev[d].budget;
    for (size_t i = 0; i < s->n_u; i++) {
        const unit *x = &s->u[i];
        u[i] = (tlr_opt_unit){on_device(s, x) ? x->dev : -1, x->pl.len, x->group};
    }
    tl_status st =
        tlr_optimum(u, s->n_u, budgets, s->n_dev, &s->groups, s->steps, s->n_steps, bytes);
    free(u);
    return st;
}

/* --- groups of tensors (tl_session_group) --- */

static int cmp_size(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* A group's lists: tensors (distinct_tensors', n > 0: G's to keep) and the same sorted. */
static tl_status group_lists(size_t *tensors, size_t n, sgroup *G) {
    G->tensors = tensors;
    G->n = n;
    G->sorted = tl__os_malloc(n * sizeof *G->sorted);
    if (!G->sorted) return tl__err(TL_ERR_NOMEM, "session: out of memory for a group");
    memcpy(G->sorted, G->tensors, G->n * sizeof *G->sorted);
    qsort(G->sorted, G->n, sizeof *G->sorted, cmp_size);
    G->key = XXH3_64bits(G->sorted, G->n * sizeof *G->sorted);
    return TL_OK;
}

static void group_free(sgroup *G) {
    free(G->name);
    free(G->tensors);
    free(G->sorted);
}

/*
 * The group of these tensors (distinct_tensors' list, n > 0, which this
 * takes), found or made: a new one splits the groups the schedule counts
 * (groups.c) and makes the schedule's uses and the heaps again. On an error (TL_ERR_UNSUPPORTED: past the bounds
 * in tierload.h, tl_session_group; TL_ERR_NOMEM) *id is SIZE_MAX and nothing
 * changed.
 */
static tl_status group_find_locked(tl_session *s, size_t *tensors, size_t n, const char *name,
                                   size_t *id) {
    tl__os_mutex_assert_held(&s->mu);
    *id = SIZE_MAX;
    sgroup G = {0};
    tl_status st = group_lists(tensors, n, &G);
    for (size_t i = 0; !st && i < s->n_gv; i++) {
        sgroup *H = &s->gv[i];
        if (H->key != G.key || H->n != G.n || memcmp(H->sorted, G.sorted, G.n * sizeof *G.sorted))
            continue;
        if (name && !H->name && !(H->name = tl__os_strdup(name)))
            st = tl__err(TL_ERR_NOMEM, "session: out of memory for a group");
        group_free(&G);
        if (!st) *id = i;
        return st;
    }
    size_t max_entries = 8 * s->n_u + 4096, cnt = 0;
    for (size_t i = 0; !st && i < G.n; i++)
        cnt += s->first[G.tensors[i] + 1] - s->first[G.tensors[i]];
    size_t *units = st ? NULL : tl__os_malloc((cnt ? cnt : 1) * sizeof *units);
    size_t *ug = st ? NULL : tl__os_malloc((s->n_u ? s->n_u : 1) * sizeof *ug);
    sgroup *gv = st ? NULL : tl__os_realloc(s->gv, (s->n_gv + 1) * sizeof *gv);
    if (gv) s->gv = gv;
    if (!st && (!units || !ug || !gv || (name && !(G.name = tl__os_strdup(name)))))
        st = tl__err(TL_ERR_NOMEM, "session: out of memory for a group");
    if (!st && s->n_gv >= TL_SESSION_MAX_GROUPS)
        st = tl__err(TL_ERR_UNSUPPORTED, "session: already %u groups of tensors (the most a "
                     "session keeps)", TL_SESSION_MAX_GROUPS);
    if (!st) st = gfirst_fit(s, s->groups.n + cnt); /* each unit may start a group */
    /* the groups split on a copy, and the schedule's uses made for them, before anything changes */
    tlr_groups gr = {0};
    sched_made m = {0};
    if (!st) st = tlr_groups_copy(&s->groups, &gr);
    if (!st) {
        for (size_t i = 0, w = 0; i < G.n; i++)
            for (size_t q = s->first[G.tensors[i]]; q < s->first[G.tensors[i] + 1]; q++)
                units[w++] = q;
        for (size_t i = 0; i < s->n_u; i++)
            ug[i] = s->u[i].group;
        st = tlr_groups_add_set(&gr, s->n_gv, units, cnt, ug, s->n_u, max_entries);
    }
    if (!st && s->steps) st = uses_make(&gr, s->steps, s->n_steps, &m);
    free(units);
    if (st) {
        tlr_groups_free(&gr);
        free(ug);
        group_free(&G);
        return st;
    }
    tlr_groups_free(&s->groups);
    s->groups = gr;
    for (size_t i = 0; i < s->n_u; i++)
        s->u[i].group = ug[i];
    free(ug);
    *id = s->n_gv;
    s->gv[s->n_gv++] = G;
    (void)index_groups(s); /* cannot fail: gfirst has room */
    if (s->steps) uses_install_locked(s, &m);
    return TL_OK;
}

tl_status tl_session_group(tl_session *s, const char *name, const size_t *tensors, size_t n,
                           tl_session_step *out) {
    if (!s || !out || !tensors || !n)
        return tl__err(TL_ERR_INVALID_ARG, "tl_session_group: NULL argument or no tensors");
    size_t *t, nt, id;
    tl_status st = distinct_tensors(s, tensors, n, &t, &nt);
    if (st) return tl__err_prefix(st, "tl_session_group %s", name ? name : "(unnamed)");
    tl__os_mutex_lock(&s->mu);
    st = group_find_locked(s, t, nt, name, &id); /* takes t */
    tl__os_mutex_unlock(&s->mu);
    if (!st) *out = (tl_session_step){TL_COMP_GROUP, id, id + 1, false};
    return st;
}

const char *tl_session_group_name(const tl_session *s, size_t id) {
    if (!s) return NULL;
    tl__os_mutex_lock((tl__os_mutex *)&s->mu);
    const char *name = id < s->n_gv ? s->gv[id].name : NULL;
    tl__os_mutex_unlock((tl__os_mutex *)&s->mu);
    return name;
}

tl_status tl_session_stats_get(const tl_session *s, tl_session_stats *out, size_t out_size) {
    if (!s || !out || !out_size)
        return tl__err(TL_ERR_INVALID_ARG, "tl_session_stats_get: NULL or size 0");
    tl_session_stats all;
    tl__os_mutex_lock((tl__os_mutex *)&s->mu);
    all = s->st;
    all.n_devices = s->n_dev;
    for (size_t d = 0; d < s->n_dev; d++) {
        all.devices[d].budget = s->dev[d].budget;
        all.devices[d].used = s->dev[d].used;
        all.devices[d].peak = s->dev[d].peak;
    }
    tl__os_mutex_unlock((tl__os_mutex *)&s->mu);
    tl__copy_out(out, out_size, &all, sizeof all);
    return TL_OK;
}

size_t tl_session_events_copy(const tl_session *s, uint64_t from, tl_session_event *out, size_t cap,
                              size_t event_size, tl_session_log *log, size_t log_size) {
    tl_session_log lg = {0};
    if (log) tl__copy_out(log, log_size, &lg, sizeof lg);
    if (!s) return 0;
    if (!event_size) cap = 0;
    tl__os_mutex_lock((tl__os_mutex *)&s->mu);
    uint64_t first = s->ev_next - s->n_ev;
    if (from < first) from = first;
    size_t n = 0;
    if (out && from < s->ev_next) {
        uint64_t avail = s->ev_next - from;
        n = avail < cap ? (size_t)avail : cap;
        size_t at = (size_t)(from - first);
        for (size_t i = 0; i < n; i++)
            tl__copy_out((char *)out + i * event_size, event_size,
                         &s->ev[(s->ev_head + at + i) % s->ev_cap], sizeof *s->ev);
    }
    lg = (tl_session_log){first, s->ev_next, s->ev_dropped, s->ev_cap};
    if (log) tl__copy_out(log, log_size, &lg, sizeof lg);
    tl__os_mutex_unlock((tl__os_mutex *)&s->mu);
    return n;
}

tl_status tl_session_events_clear(tl_session *s) {
    if (!s) return tl__err(TL_ERR_INVALID_ARG, "tl_session_events_clear: NULL session");
    tl__os_mutex_lock(&s->mu);
    free(s->ev);
    s->ev = NULL;
    s->n_ev = s->alloc_ev = s->ev_head = 0;
    s->ev_cap = s->o.no_events ? 0 : s->o.event_cap ? s->o.event_cap : DEFAULT_EVENT_CAP;
    tl__os_mutex_unlock(&s->mu);
    return TL_OK;
}

/*
 * Every reference is held by an outstanding set or an acquire in flight: per
 * unit, refs == the outstanding sets holding it when no acquire is in flight;
 * with some in flight, refs >= that and the totals differ by what they hold.
 */
static tl_status check_refs_locked(const tl_session *s) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    uint32_t *held = tl__os_calloc(s->n_u ? s->n_u : 1, sizeof *held);
    if (!held) return tl__err(TL_ERR_NOMEM, "tl_session_check: out of memory");
    size_t sets = 0;
    for (const tl_acquired *a = s->sets; a; a = a->next, sets++)
        for (size_t i = 0; i < a->n_units; i++)
            held[a->units[i]]++;
    tl_status st = TL_OK;
    if (sets != s->n_sets)
        st = tl__err(TL_ERR_INTEGRITY, "%zu outstanding sets listed, %zu counted", sets, s->n_sets);
    uint64_t refs = 0, in_sets = 0;
    for (size_t i = 0; i < s->n_u && !st; i++) {
        const unit *u = &s->u[i];
        refs += u->refs;
        in_sets += held[i];
        if (u->refs < held[i] || (!s->acquiring && u->refs != held[i]))
            st = tl__err(TL_ERR_INTEGRITY,
                         "tensor %s: %u references, %u held by outstanding sets (%zu acquires "
                         "in flight)",
                         tname(s, u), u->refs, held[i], s->acquiring);
    }
    if (!st && refs != in_sets + s->acquiring_refs)
        st = tl__err(TL_ERR_INTEGRITY,
                     "%llu references, %llu held by outstanding sets and %llu by acquires in "
                     "flight",
                     (unsigned long long)refs, (unsigned long long)in_sets,
                     (unsigned long long)s->acquiring_refs);
    free(held);
    return st;
}

/*
 * The eviction heaps hold exactly the evictable units, each at its place,
 * keyed by its current next use, in heap order; their bytes are counted.
 */
static tl_status check_heaps_locked(const tl_session *s) {
    tl__os_mutex_assert_held((tl__os_mutex *)&s->mu);
    uint64_t bytes[TL_PLAN_MAX_DEVICES] = {0};
    size_t count[TL_PLAN_MAX_DEVICES] = {0};
    for (size_t i = 0; i < s->n_u; i++) {
        const unit *u = &s->u[i];
        bool evictable = on_device(s, u) && u->on_dev && !u->loading && !u->refs;
        if (evictable != (u->hpos != NOT_EVICTABLE))
            return tl__err(TL_ERR_INTEGRITY, "tensor %s: %s, and %s the eviction order",
                           tname(s, u), evictable ? "evictable" : "not evictable",
                           evictable ? "not in" : "in");
        if (!evictable) continue;
        const sdev *v = &s->dev[u->dev];
        if (s->furthest
                ? u->hpos != IN_HEAP || s->hp[i] >= v->n_heap || v->heap[s->hp[i]].k != i ||
                      v->heap[s->hp[i]].nu != u->nu || v->heap[s->hp[i]].last_use != u->last_use
                : u->hpos != IN_LIST)
            return tl__err(TL_ERR_INTEGRITY, "tensor %s: misplaced in the eviction order",
                           tname(s, u));
        if (s->furthest && u->nu != next_use_locked(s, u))
            return tl__err(TL_ERR_INTEGRITY, "tensor %s: next use %zu kept, %zu now", tname(s, u),
                           u->nu, next_use_locked(s, u));
        bytes[u->dev] += u->pl.len;
        count[u->dev]++;
    }
    for (size_t d = 0; d < s->n_dev; d++) {
        const sdev *v = &s->dev[d];
        if (count[d] != v->n_heap || bytes[d] != v->evictable)
            return tl__err(TL_ERR_INTEGRITY,
                           "%s: %zu units of %llu bytes evictable, %zu of %llu counted",
                           s->st.devices[d].name, count[d], (unsigned long long)bytes[d], v->n_heap,
                           (unsigned long long)v->evictable);
        for (size_t k = 1; s->furthest && k < v->n_heap; k++)
            if (hent_before(&v->heap[k], &v->heap[(k - 1) / 2]))
                return tl__err(TL_ERR_INTEGRITY, "%s: eviction order out of heap order at %zu",
                               s->st.devices[d].name, k);
        size_t listed = 0;
        for (int l = 0; !s->furthest && l < 2; l++)
            for (size_t k = v->lhead[l], prev = NOT_EVICTABLE; k != NOT_EVICTABLE;
                 prev = k, k = s->u[k].lnext, listed++) {
                const unit *u = &s->u[k];
                if (listed >= v->n_heap || u->lprev != prev || u->dev != (int32_t)d ||
                    !u->pl.streamed != l ||
                    (prev != NOT_EVICTABLE && !evict_before(s, &s->u[prev], u)) ||
                    (u->lnext == NOT_EVICTABLE && v->ltail[l] != k))
                    return tl__err(TL_ERR_INTEGRITY, "%s: eviction list broken at tensor %s",
                                   s->st.devices[d].name, tname(s, u));
            }
        if (!s->furthest && listed != v->n_heap)
            return tl__err(TL_ERR_INTEGRITY, "%s: %zu units listed for eviction, %zu counted",
                           s->st.devices[d].name, listed, v->n_heap);
    }
    return TL_OK;
}

tl_status tl_session_check(const tl_session *s) {
    if (!s) return tl__err(TL_ERR_INVALID_ARG, "tl_session_check: NULL");
    tl__os_mutex_lock((tl__os_mutex *)&s->mu);
    tl_status st = TL_OK;
    uint64_t used[TL_PLAN_MAX_DEVICES] = {0}, host = 0;
    for (size_t i = 0; i < s->n_u; i++) {
        const unit *u = &s->u[i];
        if (u->on_dev && u->loading)
            st = tl__err(TL_ERR_INTEGRITY, "unit %zu both on and loading", i);
        if ((u->on_dev || u->loading) && !on_device(s, u))
            st = tl__err(TL_ERR_INTEGRITY, "host unit %zu marked on a device", i);
        if (u->on_dev || u->loading) used[u->dev] += u->pl.len;
        if (u->ram) host += u->pl.len;
        if (u->dirty && !u->on_dev)
            st = tl__err(TL_ERR_INTEGRITY, "dirty unit %zu off its device", i);
    }
    for (size_t d = 0; d < s->n_dev && !st; d++) {
        if (used[d] != s->dev[d].used)
            st = tl__err(TL_ERR_INTEGRITY, "%s: %llu bytes accounted, %llu held",
                         s->st.devices[d].name, (unsigned long long)s->dev[d].used,
                         (unsigned long long)used[d]);
        else if (s->dev[d].used > s->dev[d].budget && s->dev[d].evictable)
            st =
                tl__err(TL_ERR_INTEGRITY, "%s: %llu bytes used, budget %llu", s->st.devices[d].name,
                        (unsigned long long)s->dev[d].used, (unsigned long long)s->dev[d].budget);
    }
    if (!st && host != s->st.host_used)
        st = tl__err(TL_ERR_INTEGRITY, "host copies: %llu accounted, %llu held",
                     (unsigned long long)s->st.host_used, (unsigned long long)host);
    if (!st && host > s->host_budget) st = tl__err(TL_ERR_INTEGRITY, "host copies over budget");
    if (!st) st = check_refs_locked(s);
    if (!st) st = check_heaps_locked(s);
    tl__os_mutex_unlock((tl__os_mutex *)&s->mu);
    return st;
}

const tl_plan *tlr_session_plan(const tl_session *s) {
    return s->p;
}

tl_model *tlr_session_model(const tl_session *s) {
    return s->m;
}

tl_device *tlr_session_device(const tl_session *s, size_t i) {
    return i < s->n_dev ? s->dev[i].d : NULL;
}

tl_device *tlr_session_clock_device(const tl_session *s) {
    for (size_t d = 0; d < s->n_dev; d++)
        if (s->dev[d].sim) return s->dev[d].d;
    return NULL;
}
