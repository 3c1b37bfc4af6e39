/*
 * run.c — tl_run_pipeline: a pipeline of phases carried out through a
 * session, the way an engine would run it, with a check of every byte in
 * place of the engine's compute (or beside it, through the step callback).
 *
 * The run's acquires are known before it starts, so they are given to the
 * session as its schedule first: eviction then takes the tensor used
 * furthest in the future, and the offline optimum (tl_session_optimal_bytes)
 * is computed for the very same sequence.
 *
 * The check hashes each acquired part where it lives: host tiers directly
 * (under the SIGBUS guard: they may be the file's mapping), a sim device's
 * memory from the hashes the sim took as its leaves landed while the run
 * lasts (tl__sim_hash_landing: each leaf hashed in cache right after its
 * copy, forgotten on any later write to it), else in place (its model time
 * as if copied back either way), other device memory
 * through one staging buffer of at most 16 MiB (copied back chunk by chunk),
 * and compares with the hash of the model's own bytes for that range
 * (computed once per part and cached) — for a tensor the session keeps
 * converted, of those bytes converted as the loader converts them. The hash
 * is a tree of XXH3 (64 bits): XXH3 of each 1 MiB leaf, then XXH3 of the
 * leaves' hashes. The check compares two hashes of its own, so the fastest of
 * xxHash's does, and the leaves of a large range are hashed on every core
 * (a team: os/team.h) while a stream of pieces (copied back, converted) is
 * hashed leaf by leaf as it comes, to the same value.
 */
#include "residency/residency.h"
#include "residency/compute.h"

#include "core/checkhash.h"
#include "core/error.h"
#include "core/options.h"
#include "devices/devices.h"
#include "io/convert.h"
#include "os/guard.h"
#include "os/hostmem.h"
#include "os/os.h"
#include "os/team.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define CHECK_CHUNK (16ull << 20)
#define LEAF TL__CHECK_LEAF

typedef struct item {
    uint32_t mask; /* components, by bit */
    uint32_t repeat;
    char name[64];
} item;

struct tl_run_report {
    tl_run_phase *ph;
    size_t n;
    tl_run_phase total;
    uint64_t optimal;
};

typedef struct expect {
    uint64_t off, len, hash;
} expect;

typedef struct run {
    tl_session *s;
    tl_model *m;
    const tl_run_options *o;
    tl_device *clock_dev; /* the first sim device, for model time */
    expect **want;        /* per tensor: cached expected hashes of its parts */
    uint32_t *n_want;
    unsigned char *buf; /* staging for device reads */
    uint64_t buf_len;
    tl_run_phase *cur;
    tlr_compute *comp; /* compute ggml (compute.c), or NULL */
    tl__team *team;    /* the check's hashing on every core (NULL: on this thread) */
} run;

void tl_run_options_init(tl_run_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

/* --- the pipeline --- */

static tl_status parse_pipeline(const char *spec, item **out, size_t *n) {
    *out = NULL;
    *n = 0;
    size_t cap = 1;
    for (const char *p = spec; *p; p++)
        cap += *p == ',';
    item *it = tl__os_calloc(cap, sizeof *it);
    if (!it) return tl__err(TL_ERR_NOMEM, "pipeline: out of memory");
    const char *p = spec;
    tl_status st = TL_OK;
    while (!st) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char buf[sizeof it->name];
        if (len == 0 || len >= sizeof buf) {
            st = tl__err(TL_ERR_INVALID_ARG, "pipeline '%s': empty or overlong phase", spec);
            break;
        }
        memcpy(buf, p, len);
        buf[len] = 0;
        item *x = &it[*n];
        x->repeat = 1;
        char *star = strchr(buf, '*');
        if (star) {
            *star = 0;
            char *end;
            unsigned long r = strtoul(star + 1, &end, 10);
            if (!star[1] || *end || r == 0 || r > 100000) {
                st = tl__err(TL_ERR_INVALID_ARG, "pipeline '%s': bad repeat '*%s' (1..100000)",
                             spec, star + 1);
                break;
            }
            x->repeat = (uint32_t)r;
        }
        snprintf(x->name, sizeof x->name, "%s", buf);
        for (char *c = buf, *save = NULL, *tok; (tok = strtok_r(c, "+", &save)); c = NULL) {
            int comp = tl_component_from_name(tok);
            if (comp < 0) {
                st =
                    tl__err(TL_ERR_INVALID_ARG, "pipeline '%s': unknown component '%s'", spec, tok);
                break;
            }
            x->mask |= 1u << comp;
        }
        if (!st && !x->mask)
            st = tl__err(TL_ERR_INVALID_ARG, "pipeline '%s': a phase names no component", spec);
        (*n)++;
        if (!e) break;
        p = e + 1;
    }
    if (st) {
        free(it);
        *n = 0;
        return st;
    }
    *out = it;
    return TL_OK;
}

tl_status tl_run_pipeline_passes(const char *pipeline, uint32_t passes[TL_COMP_COUNT]) {
    if (!pipeline || !passes) return tl__err(TL_ERR_INVALID_ARG, "pipeline: NULL argument");
    item *it;
    size_t n;
    tl_status st = parse_pipeline(pipeline, &it, &n);
    if (st) return st;
    memset(passes, 0, sizeof passes[0] * TL_COMP_COUNT);
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < TL_COMP_COUNT; c++)
            if (it[i].mask & (1u << c) && passes[c] <= UINT32_MAX - it[i].repeat)
                passes[c] += it[i].repeat;
    free(it);
    return TL_OK;
}

/* The plan's phases, diffusion and controlnet ones `steps` times, diffusion2's `steps2`. */
static tl_status default_pipeline(const tl_plan *p, uint32_t steps, uint32_t steps2, item **out,
                                  size_t *n) {
    size_t np = tl_plan_phase_count(p);
    item *it = tl__os_calloc(np ? np : 1, sizeof *it);
    if (!it) return tl__err(TL_ERR_NOMEM, "pipeline: out of memory");
    for (size_t i = 0; i < np; i++) {
        it[i].mask = tl_plan_phase_mask(p, i);
        it[i].repeat = it[i].mask & ((1u << TL_COMP_DIFFUSION) | (1u << TL_COMP_CONTROLNET)) ? steps
                       : it[i].mask & (1u << TL_COMP_DIFFUSION2)                           ? steps2
                                                                                          : 1;
        size_t w = 0;
        for (int c = 0; c < TL_COMP_COUNT; c++)
            if (it[i].mask & (1u << c))
                w += (size_t)snprintf(it[i].name + w, sizeof it[i].name - w, "%s%s", w ? "+" : "",
                                      tl_component_name((tl_component)c));
    }
    *out = it;
    *n = np;
    return TL_OK;
}

/* Does component c get acquired layer by layer? */
static bool streamed(const tl_session *s, const tl_run_options *o, tl_component c) {
    (void)s;
    tl_plan_decision d;
    if (tl_plan_decision_of(tlr_session_plan(s), c, &d, sizeof d) || !d.present) return false;
    return o->stream_all || d.mode == TL_PLAN_MODE_STREAM;
}

/* --- the check --- */

/* The check's hash of a range, fed in pieces of any size: leaves of LEAF bytes. */
typedef struct tree {
    XXH3_state_t *st; /* the leaf being filled */
    uint64_t in_leaf; /* its bytes so far */
    uint64_t *leaves;
    size_t n, cap;
    tl__team *team;
    bool guard; /* the bytes may be a file's mapping: a SIGBUS is an error, not a death */
    _Atomic int err;
} tree;

static bool tree_init(tree *t, uint64_t total, tl__team *team, bool guard) {
    memset(t, 0, sizeof *t);
    atomic_init(&t->err, 0);
    t->cap = (size_t)(total / LEAF) + 1;
    t->leaves = tl__os_malloc(t->cap * sizeof *t->leaves);
    t->st = XXH3_createState();
    t->team = team;
    t->guard = guard;
    if (t->st) XXH3_64bits_reset(t->st);
    return t->leaves && t->st;
}

static void tree_free(tree *t) {
    free(t->leaves);
    XXH3_freeState(t->st);
}

typedef struct leaf_job {
    const unsigned char *p;
    uint64_t *out;
    XXH3_state_t *st; /* a state update instead of a whole leaf (the partial one) */
    size_t n;
} leaf_job;

static void do_leaf(void *a) {
    leaf_job *j = a;
    if (j->st)
        XXH3_64bits_update(j->st, j->p, j->n);
    else
        *j->out = XXH3_64bits(j->p, j->n);
}

/* One leaf's hash (or a partial leaf's update), under the guard where the tree asks for it. */
static void leaf(tree *t, const unsigned char *p, size_t n, uint64_t *out, XXH3_state_t *st) {
    leaf_job j = {p, out, st, n};
    if (!t->guard)
        do_leaf(&j);
    else if (tl__os_guarded_call(do_leaf, &j))
        atomic_store(&t->err, EFAULT);
}

typedef struct leaves_job {
    tree *t;
    const unsigned char *p;
    uint64_t *out;
} leaves_job;

static void leaf_piece(void *a, size_t i) {
    leaves_job *j = a;
    leaf(j->t, j->p + i * LEAF, LEAF, &j->out[i], NULL);
}

/* Room for `more` leaves and the partial one (more bytes than announced: the array grows). */
static bool tree_room(tree *t, size_t more) {
    if (t->n + more + 1 <= t->cap) return true;
    size_t nc = t->n + more + 1;
    uint64_t *g = tl__os_realloc(t->leaves, nc * sizeof *g);
    if (!g) {
        atomic_store(&t->err, ENOMEM);
        return false;
    }
    t->leaves = g;
    t->cap = nc;
    return true;
}

static void tree_update(tree *t, const void *data, uint64_t n) {
    const unsigned char *p = data;
    size_t whole = (size_t)(n / LEAF);
    if (!tree_room(t, whole + 1)) return;
    if (t->in_leaf) { /* the partial leaf first */
        uint64_t k = LEAF - t->in_leaf < n ? LEAF - t->in_leaf : n;
        leaf(t, p, (size_t)k, NULL, t->st);
        t->in_leaf += k;
        p += k;
        n -= k;
        if (t->in_leaf < LEAF) return;
        t->leaves[t->n++] = XXH3_64bits_digest(t->st);
        XXH3_64bits_reset(t->st);
        t->in_leaf = 0;
        whole = (size_t)(n / LEAF);
    }
    leaves_job j = {t, p, t->leaves + t->n};
    if (whole > 1 && t->team)
        tl__team_run(t->team, whole, leaf_piece, &j);
    else
        for (size_t i = 0; i < whole; i++)
            leaf_piece(&j, i);
    t->n += whole;
    p += whole * LEAF;
    n -= whole * LEAF;
    if (n) {
        leaf(t, p, (size_t)n, NULL, t->st);
        t->in_leaf = n;
    }
}

/* The range's hash; the tree's error (EFAULT, ENOMEM) or 0. */
static int tree_digest(tree *t, uint64_t *out) {
    if ((t->in_leaf || !t->n) && tree_room(t, 0)) t->leaves[t->n++] = XXH3_64bits_digest(t->st);
    *out = tl__check_root(t->leaves, t->n);
    return atomic_load(&t->err);
}

/* The check's hash of host bytes that may be a file mapping (EFAULT when the file shrank under it). */
static int hash_host(run *r, const void *p, uint64_t n, uint64_t *out) {
    tree t;
    *out = 0;
    if (!tree_init(&t, n, r->team, true)) {
        tree_free(&t);
        return ENOMEM;
    }
    tree_update(&t, p, n);
    int e = tree_digest(&t, out);
    tree_free(&t);
    return e;
}

/* A hash's error as a status: EFAULT the file shrank under its mapping, else out of memory. */
static tl_status hash_status(int e, const char *name) {
    if (!e) return TL_OK;
    if (e == EFAULT)
        return tl__err(TL_ERR_CHANGED, "tensor %s: its file was truncated under its mapping", name);
    return tl__err(TL_ERR_NOMEM, "run: hashing tensor %s: out of memory", name);
}

/* The check's staging buffer for device reads and conversions (made on first use). */
static tl_status check_buf(run *r) {
    if (r->buf) return TL_OK;
    uint64_t len;
    if (tl__os_anon_alloc(CHECK_CHUNK, TL_OS_PAGES_SMALL, (void **)&r->buf, &len))
        return tl__err(TL_ERR_NOMEM, "run: staging buffer for the check: out of memory");
    r->buf_len = len;
    return TL_OK;
}

static tl_status hash_part(run *r, const tl_session_tensor *t, const tl_session_part *p,
                           uint64_t *out) {
    *out = 0; /* written on every path: 0 when the status is an error */
    if (p->tier != TL_TIER_DEVICE)
        return hash_status(hash_host(r, p->host, p->nbytes, out), t->info->name);
    if (tl__sim_landed_hash(p->device, p->dptr, p->nbytes, out)) return TL_OK;
    tree tr;
    bool ok = tree_init(&tr, p->nbytes, r->team, false), in_place = true;
    for (uint64_t o = 0; ok && in_place && o < p->nbytes; o += CHECK_CHUNK) {
        uint64_t n = p->nbytes - o < CHECK_CHUNK ? p->nbytes - o : CHECK_CHUNK;
        const unsigned char *m = tl__sim_read_in_place(p->device, p->dptr + o, n);
        if (m)
            tree_update(&tr, m, n);
        else
            in_place = false; /* not a sim: copied back below, from the start */
    }
    tl_status s = TL_OK;
    if (ok && !in_place) {
        tree_free(&tr);
        ok = tree_init(&tr, p->nbytes, r->team, false);
        s = check_buf(r);
        for (uint64_t o = 0; ok && !s && o < p->nbytes; o += CHECK_CHUNK) {
            uint64_t n = p->nbytes - o < CHECK_CHUNK ? p->nbytes - o : CHECK_CHUNK;
            s = tl_device_copy_from(p->device, r->buf, p->dptr + o, n);
            if (!s) tree_update(&tr, r->buf, n);
        }
        if (s) s = tl__err_prefix(s, "tensor %s: reading it back", t->info->name);
    }
    int e = ok ? tree_digest(&tr, out) : ENOMEM;
    tree_free(&tr);
    return s ? s : hash_status(e, t->info->name);
}

/* A conversion of file bytes into the check's buffer, run as one guarded call. */
typedef struct conv_args {
    tl_dtype to, from;
    void *dst;
    const void *src;
    uint64_t n, bad;
    bool ok;
} conv_args;

static void do_conv(void *a) {
    conv_args *c = a;
    c->ok = tl__convert_run(c->to, c->dst, c->from, c->src, c->n, &c->bad);
}

/*
 * The check's hash of part p of a tensor the session keeps converted: the
 * file's bytes of the part's rows converted as the loader converts them,
 * chunk by chunk.
 */
static tl_status hash_converted(run *r, const tl_session_tensor *t, const tl_session_part *p,
                                uint64_t *out) {
    const tl_tensor_info *fi = tl_model_tensor(r->m, t->index);
    tl__conv_unit u;
    if (!tl__convert_unit(fi->dtype, t->info->dtype, &u))
        return tl__err(TL_ERR_UNSUPPORTED, "tensor %s: no conversion from %s to %s", fi->name,
                       tl_dtype_name(fi->dtype), tl_dtype_name(t->info->dtype));
    uint64_t off = 0, len = fi->nbytes;
    if (p->nbytes != t->info->nbytes) { /* a row block */
        uint64_t row = fi->nbytes / (uint64_t)fi->shape[0];
        off = p->row_begin * row;
        len = (p->row_end - p->row_begin) * row;
    }
    tl_status s = check_buf(r);
    if (s) return s;
    tree tr;
    if (!tree_init(&tr, len / u.in * u.out, r->team, false)) {
        tree_free(&tr);
        return tl__err(TL_ERR_NOMEM, "run: out of memory");
    }
    const unsigned char *src = (const unsigned char *)tl_model_tensor_data(r->m, t->index) + off;
    uint64_t step = CHECK_CHUNK / (u.out > u.in ? u.out : u.in) * u.in;
    for (uint64_t o = 0; o < len && !s; o += step) {
        uint64_t n = len - o < step ? len - o : step;
        conv_args a = {t->info->dtype, fi->dtype, r->buf, src + o, n / u.in * u.elems, 0, false};
        if (tl__os_guarded_call(do_conv, &a))
            s = tl__err(TL_ERR_CHANGED, "tensor %s: its file was truncated under its mapping",
                        fi->name);
        else if (!a.ok)
            s = tl__err(TL_ERR_UNSUPPORTED, "tensor %s: element %llu does not fit in %s",
                        fi->name, (unsigned long long)((off + o) / u.in * u.elems + a.bad),
                        tl_dtype_name(t->info->dtype));
        else
            tree_update(&tr, r->buf, n / u.in * u.out);
    }
    int e = tree_digest(&tr, out);
    tree_free(&tr);
    return s ? s : hash_status(e, fi->name);
}

static tl_status expected(run *r, const tl_session_tensor *t, const tl_session_part *p,
                          uint64_t *out) {
    *out = 0; /* written on every path: 0 when the status is an error */
    size_t i = t->index;
    for (uint32_t k = 0; k < r->n_want[i]; k++)
        if (r->want[i][k].off == p->offset && r->want[i][k].len == p->nbytes) {
            *out = r->want[i][k].hash;
            return TL_OK;
        }
    if (t->info->dtype != tl_model_tensor(r->m, i)->dtype) { /* kept converted by the session */
        tl_status s = hash_converted(r, t, p, out);
        if (s) return s;
    } else {
        const unsigned char *src = (const unsigned char *)tl_model_tensor_data(r->m, i) + p->offset;
        tl_status s = hash_status(hash_host(r, src, p->nbytes, out), t->info->name);
        if (s) return s;
    }
    expect *w = tl__os_realloc(r->want[i], (r->n_want[i] + 1) * sizeof *w);
    if (!w) return TL_OK; /* not cached: computed again next time */
    w[r->n_want[i]++] = (expect){p->offset, p->nbytes, *out};
    r->want[i] = w;
    return TL_OK;
}

static tl_status check(run *r, const tl_acquired *a) {
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *t = tl_acquired_tensor(a, i);
        for (uint32_t k = 0; k < t->n_parts; k++) {
            uint64_t got, want;
            tl_status s = hash_part(r, t, &t->parts[k], &got);
            if (!s) s = expected(r, t, &t->parts[k], &want);
            if (s) return s;
            if (got != want) r->cur->hash_mismatches++;
        }
        r->cur->tensors_checked++;
    }
    return TL_OK;
}

/* --- running --- */

static uint64_t acquired_bytes(const tl_acquired *a) {
    uint64_t b = 0;
    for (size_t i = 0; i < tl_acquired_count(a); i++)
        b += tl_acquired_tensor(a, i)->info->nbytes;
    return b;
}

static tl_status step(run *r, const char *phase, uint32_t pass, tl_component c, size_t lb,
                      size_t le, bool other, size_t layer_label) {
    tl_acquired *a;
    tl_status s = tl_session_acquire(r->s, c, lb, le, other, &a);
    if (s) return s;
    if (!r->o->no_verify) s = check(r, a);
    if (!s && r->comp) s = tlr_compute_step(r->comp, a, r->cur);
    if (!s && r->o->step) s = r->o->step(r->o->user, r->s, phase, pass, c, layer_label, a);
    if (!s && r->clock_dev && r->o->sim_compute_s_per_gib > 0)
        s = tl_device_sim_advance(r->clock_dev, (double)acquired_bytes(a) / (1ull << 30) *
                                                    r->o->sim_compute_s_per_gib);
    tl_session_release(r->s, a);
    return s;
}

static tl_status run_component(run *r, const item *it, uint32_t pass, tl_component c) {
    if (!streamed(r->s, r->o, c))
        return step(r, it->name, pass, c, 0, TL_ALL_LAYERS, true, TL_ALL_LAYERS);
    tl_acquired *other;
    tl_status s = tl_session_acquire(r->s, c, 0, 0, true, &other);
    if (s) return s;
    if (!r->o->no_verify) s = check(r, other);
    if (!s && r->comp) s = tlr_compute_step(r->comp, other, r->cur);
    size_t nl = tl_model_layer_count(r->m, c);
    for (size_t k = 0; k < nl && !s; k++) {
        if (!r->o->no_prefetch && k + 1 < nl) s = tl_session_prefetch(r->s, c, k + 1, k + 2, false);
        if (!s) s = step(r, it->name, pass, c, k, k + 1, false, k);
    }
    tl_session_release(r->s, other);
    return s;
}

/* The acquires the run will make, in order. */
static tl_status schedule(run *r, const item *it, size_t n, tl_session_step **out, size_t *n_out) {
    size_t cnt = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t w = 0;
        for (size_t i = 0; i < n; i++)
            for (uint32_t rep = 0; rep < it[i].repeat; rep++)
                for (int c = 0; c < TL_COMP_COUNT; c++) {
                    if (!(it[i].mask & (1u << c))) continue;
                    if (!streamed(r->s, r->o, (tl_component)c)) {
                        if (pass)
                            (*out)[w] = (tl_session_step){(tl_component)c, 0, TL_ALL_LAYERS, true};
                        w++;
                        continue;
                    }
                    if (pass) (*out)[w] = (tl_session_step){(tl_component)c, 0, 0, true};
                    w++;
                    size_t nl = tl_model_layer_count(r->m, (tl_component)c);
                    for (size_t k = 0; k < nl; k++, w++)
                        if (pass) (*out)[w] = (tl_session_step){(tl_component)c, k, k + 1, false};
                }
        if (!pass) {
            cnt = w;
            *out = tl__os_malloc((cnt ? cnt : 1) * sizeof **out);
            if (!*out) return tl__err(TL_ERR_NOMEM, "run: out of memory for the schedule");
        }
    }
    *n_out = cnt;
    return TL_OK;
}

static void delta(tl_run_phase *ph, const tl_session_stats *a, const tl_session_stats *b) {
    ph->bytes_moved = b->bytes_moved - a->bytes_moved;
    uint64_t to_dev = 0;
    for (int t = 0; t < TL_TIER_COUNT; t++)
        to_dev += b->moved[t][TL_TIER_DEVICE] - a->moved[t][TL_TIER_DEVICE];
    ph->bytes_to_devices = to_dev;
    ph->loads = b->loads - a->loads;
    ph->evictions = b->evictions - a->evictions;
    ph->drops = b->drops - a->drops;
    ph->spills = b->spills - a->spills;
    ph->prefetch_hits = b->prefetch_hits - a->prefetch_hits;
    ph->prefetch_misses = b->prefetch_misses - a->prefetch_misses;
}

static double model_time(const run *r) {
    double t = 0;
    if (r->clock_dev) tl_device_sim_clock(r->clock_dev, &t);
    return t;
}

tl_status tl_run_pipeline(tl_session *s, const tl_run_options *opts, tl_run_report **out) {
    if (!out) return tl__err(TL_ERR_INVALID_ARG, "tl_run_pipeline: out is NULL");
    *out = NULL;
    if (!s) return tl__err(TL_ERR_INVALID_ARG, "tl_run_pipeline: NULL session");
    tl_run_options o;
    tl_run_options_init(&o);
    tl_status take = tl__options_take(&o, sizeof o, opts, "tl_run_options");
    if (take) return take;
    run r = {s,    tlr_session_model(s), &o,  tlr_session_clock_device(s), NULL, NULL, NULL, 0,
             NULL, NULL, NULL};
    item *it = NULL;
    size_t n_it = 0;
    tl_status st = o.pipeline ? parse_pipeline(o.pipeline, &it, &n_it)
                              : default_pipeline(tlr_session_plan(s), o.steps ? o.steps : 20,
                                                 o.steps2   ? o.steps2
                                                 : o.steps ? o.steps
                                                           : 20,
                                                 &it, &n_it);
    if (!st) st = tlr_compute_create(r.m, &o, &r.comp);
    if (st) {
        free(it);
        return st;
    }
    r.team = tl__team_create(tl__team_default_helpers()); /* NULL: hashed on this thread alone */
    for (size_t d = 0; !o.no_verify && tlr_session_device(s, d); d++)
        tl__sim_hash_landing(tlr_session_device(s, d), true);
    size_t n_runs = 0;
    for (size_t i = 0; i < n_it; i++)
        n_runs += it[i].repeat;
    tl_run_report *rep = tl__os_calloc(1, sizeof *rep);
    size_t nt = tl_model_tensor_count(r.m);
    r.want = tl__os_calloc(nt ? nt : 1, sizeof *r.want);
    r.n_want = tl__os_calloc(nt ? nt : 1, sizeof *r.n_want);
    if (rep) rep->ph = tl__os_calloc(n_runs ? n_runs : 1, sizeof *rep->ph);
    if (!rep || !rep->ph || !r.want || !r.n_want) st = tl__err(TL_ERR_NOMEM, "run: out of memory");
    tl_session_step *steps = NULL;
    size_t n_steps = 0;
    if (!st) st = schedule(&r, it, n_it, &steps, &n_steps);
    if (!st) st = tl_session_set_schedule(s, steps, n_steps);
    if (!st && tl_session_optimal_bytes(s, &rep->optimal) != TL_OK) {
        tl__err_clear(); /* an infeasible replay has no optimum to print; the run still says why */
        rep->optimal = 0;
    }
    free(steps);
    for (size_t i = 0; i < n_it && !st; i++)
        for (uint32_t pass = 0; pass < it[i].repeat && !st; pass++) {
            tl_run_phase *ph = &rep->ph[rep->n++];
            snprintf(ph->name, sizeof ph->name, "%s", it[i].name);
            ph->pass = pass;
            r.cur = ph;
            tl_session_stats a, b;
            tl_session_stats_get(s, &a, sizeof a);
            double t0 = tl__os_now(), m0 = model_time(&r);
            for (int c = 0; c < TL_COMP_COUNT && !st; c++)
                if (it[i].mask & (1u << c)) st = run_component(&r, &it[i], pass, (tl_component)c);
            ph->seconds = tl__os_now() - t0;
            ph->model_seconds = model_time(&r) - m0;
            tl_session_stats_get(s, &b, sizeof b);
            delta(ph, &a, &b);
            if (st) st = tl__err_prefix(st, "phase %s (pass %u)", it[i].name, pass + 1);
        }
    if (r.want)
        for (size_t i = 0; i < nt; i++)
            free(r.want[i]);
    free(r.want);
    free(r.n_want);
    tlr_compute_destroy(r.comp);
    tl__team_destroy(r.team);
    for (size_t d = 0; !o.no_verify && tlr_session_device(s, d); d++)
        tl__sim_hash_landing(tlr_session_device(s, d), false);
    if (r.buf) tl__os_anon_free(r.buf, r.buf_len);
    free(it);
    if (st) {
        tl_run_report_destroy(rep);
        return st;
    }
    tl_run_phase *t = &rep->total;
    snprintf(t->name, sizeof t->name, "total");
    for (size_t i = 0; i < rep->n; i++) {
        const tl_run_phase *p = &rep->ph[i];
        t->seconds += p->seconds;
        t->model_seconds += p->model_seconds;
        t->bytes_moved += p->bytes_moved;
        t->bytes_to_devices += p->bytes_to_devices;
        t->loads += p->loads;
        t->evictions += p->evictions;
        t->drops += p->drops;
        t->spills += p->spills;
        t->prefetch_hits += p->prefetch_hits;
        t->prefetch_misses += p->prefetch_misses;
        t->tensors_checked += p->tensors_checked;
        t->hash_mismatches += p->hash_mismatches;
        t->compute_seconds += p->compute_seconds;
        t->products += p->products;
        t->product_mismatches += p->product_mismatches;
    }
    *out = rep;
    return TL_OK;
}

void tl_run_report_destroy(tl_run_report *r) {
    if (!r) return;
    free(r->ph);
    free(r);
}

size_t tl_run_report_phase_count(const tl_run_report *r) {
    return r ? r->n : 0;
}

const tl_run_phase *tl_run_report_phase(const tl_run_report *r, size_t i) {
    return r && i < r->n ? &r->ph[i] : NULL;
}

const tl_run_phase *tl_run_report_total(const tl_run_report *r) {
    return r ? &r->total : NULL;
}

uint64_t tl_run_report_optimal_bytes(const tl_run_report *r) {
    return r ? r->optimal : 0;
}
