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
 * memory in place (its model time as if copied back), other device memory
 * through one staging buffer of at most 16 MiB (copied back chunk by chunk),
 * and compares with the hash of the model's own bytes for that range
 * (computed once per part and cached) — for a tensor the session keeps
 * converted, of those bytes converted as the loader converts them. The hash
 * is XXH3 (64 bits): the check compares two hashes of its own, so the
 * fastest of xxHash's does.
 */
#include "residency/residency.h"
#include "residency/compute.h"

#include "core/error.h"
#include "core/options.h"
#include "devices/devices.h"
#include "io/convert.h"
#include "os/guard.h"
#include "os/hostmem.h"
#include "os/os.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define CHECK_CHUNK (16ull << 20)

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

typedef struct hash_args {
    XXH3_state_t *st;
    const void *p;
    size_t n;
} hash_args;

static void do_update(void *a) {
    hash_args *h = a;
    XXH3_64bits_update(h->st, h->p, h->n);
}

/* xxh64 of host bytes that may be a file mapping (EFAULT when the file shrank under it). */
static int hash_host(const void *p, uint64_t n, uint64_t *out) {
    XXH3_state_t *st = XXH3_createState();
    if (!st) return ENOMEM;
    XXH3_64bits_reset(st);
    int e = 0;
    for (uint64_t o = 0; o < n && !e; o += CHECK_CHUNK) {
        hash_args a = {st, (const unsigned char *)p + o,
                       (size_t)(n - o < CHECK_CHUNK ? n - o : CHECK_CHUNK)};
        e = tl__os_guarded_call(do_update, &a);
    }
    *out = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return e;
}

static tl_status hash_part(run *r, const tl_session_tensor *t, const tl_session_part *p,
                           uint64_t *out) {
    *out = 0; /* written on every path: 0 when the status is an error */
    if (p->tier != TL_TIER_DEVICE) {
        if (hash_host(p->host, p->nbytes, out))
            return tl__err(TL_ERR_CHANGED, "tensor %s: its file was truncated under its mapping",
                           t->info->name);
        return TL_OK;
    }
    XXH3_state_t *st = XXH3_createState();
    if (!st) return tl__err(TL_ERR_NOMEM, "run: out of memory");
    XXH3_64bits_reset(st);
    const unsigned char *in_place = NULL;
    for (uint64_t o = 0; o < p->nbytes; o += CHECK_CHUNK) {
        uint64_t n = p->nbytes - o < CHECK_CHUNK ? p->nbytes - o : CHECK_CHUNK;
        in_place = tl__sim_read_in_place(p->device, p->dptr + o, n);
        if (!in_place) break; /* not a sim: copied back below, from the start */
        XXH3_64bits_update(st, in_place, (size_t)n);
    }
    if (in_place) {
        *out = XXH3_64bits_digest(st);
        XXH3_freeState(st);
        return TL_OK;
    }
    XXH3_64bits_reset(st);
    if (!r->buf) {
        uint64_t len;
        int e = tl__os_anon_alloc(CHECK_CHUNK, TL_OS_PAGES_SMALL, (void **)&r->buf, &len);
        if (e) {
            XXH3_freeState(st);
            return tl__err(TL_ERR_NOMEM, "run: staging buffer for the check: out of memory");
        }
        r->buf_len = len;
    }
    tl_status s = TL_OK;
    for (uint64_t o = 0; o < p->nbytes && !s; o += CHECK_CHUNK) {
        uint64_t n = p->nbytes - o < CHECK_CHUNK ? p->nbytes - o : CHECK_CHUNK;
        s = tl_device_copy_from(p->device, r->buf, p->dptr + o, n);
        if (!s) XXH3_64bits_update(st, r->buf, (size_t)n);
    }
    *out = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    if (s) return tl__err_prefix(s, "tensor %s: reading it back", t->info->name);
    return TL_OK;
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
 * xxh64 of part p of a tensor the session keeps converted: the file's bytes
 * of the part's rows converted as the loader converts them, chunk by chunk.
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
    if (!r->buf) {
        uint64_t blen;
        int e = tl__os_anon_alloc(CHECK_CHUNK, TL_OS_PAGES_SMALL, (void **)&r->buf, &blen);
        if (e) return tl__err(TL_ERR_NOMEM, "run: staging buffer for the check: out of memory");
        r->buf_len = blen;
    }
    XXH3_state_t *st = XXH3_createState();
    if (!st) return tl__err(TL_ERR_NOMEM, "run: out of memory");
    XXH3_64bits_reset(st);
    const unsigned char *src = (const unsigned char *)tl_model_tensor_data(r->m, t->index) + off;
    uint64_t step = CHECK_CHUNK / (u.out > u.in ? u.out : u.in) * u.in;
    tl_status s = TL_OK;
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
            XXH3_64bits_update(st, r->buf, (size_t)(n / u.in * u.out));
    }
    *out = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return s;
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
        if (hash_host(src, p->nbytes, out))
            return tl__err(TL_ERR_CHANGED, "tensor %s: its file was truncated under its mapping",
                           t->info->name);
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
    run r = {s,   tlr_session_model(s), &o, tlr_session_clock_device(s), NULL, NULL, NULL, 0, NULL,
             NULL};
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
