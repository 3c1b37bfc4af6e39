/*
 * compute.c — the compute of a pipeline run with --compute ggml: at each
 * acquired step, every 2-D weight of a type ggml multiplies gives
 * y = W . x (ggml_mul_mat, a fixed random x), computed where the weight
 * lives, as one graph per step and device — per layer when the component is
 * streamed, while the session prefetches the next layer:
 *
 *   - on a ggml device: from its allocation, or (host-pointer devices) from
 *     the host memory it was given, wrapped in place (zero copy);
 *   - on a host tier (the file's mapping, RAM, pinned, spill): on ggml:CPU,
 *     wrapped in place;
 *   - on any other device (sim, cuda): copied back to the host, then on
 *     ggml:CPU.
 *
 * Each y is compared with the product computed once per tensor on ggml:CPU
 * from the model's own bytes (tl_model_tensor_data: the mapping), rows
 * [row_begin, row_end) for a part of a row-split tensor. ggml:CPU computes
 * each row of y alone, so products on ggml:CPU must equal it bit for bit;
 * other ggml devices sum in another order and are held to a relative 1e-3.
 */
#include "residency/compute.h"

#include "core/error.h"
#include "devices/ggml_dl.h"
#include "os/os.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SEED 0x7131e10adull

typedef struct job {
    size_t tensor;
    uint64_t row_begin;
    tl_device *dev;    /* where the product is computed */
    void *copy;        /* device-to-host copy (freed after the step) */
    bool done;         /* computed (in the graph of its device) */
    tl__ggml_weight w; /* w.y: rows floats */
} job;

struct tlr_compute {
    tl_model *m;
    tl_device *cpu;    /* ggml:CPU: references and host-tier products */
    unsigned char *ok; /* per tensor: 0 unknown, 1 multiplied, 2 skipped */
    float **ref;       /* per tensor: the product from the model's bytes (all rows) */
    int threads;
};

tl_status tlr_compute_create(tl_model *m, const tl_run_options *o, tlr_compute **out) {
    *out = NULL;
    if (o->compute == TL_RUN_COMPUTE_NONE) return TL_OK;
    if (o->compute != TL_RUN_COMPUTE_GGML)
        return tl__err(TL_ERR_INVALID_ARG, "run: unknown compute %d", (int)o->compute);
    tl_status s = tl_device_ggml_discover(o->ggml_dir, NULL);
    if (s) return tl__err_prefix(s, "run: compute ggml");
    tlr_compute *c = tl__os_calloc(1, sizeof *c);
    size_t nt = tl_model_tensor_count(m);
    if (c) {
        c->ok = tl__os_calloc(nt ? nt : 1, 1);
        c->ref = tl__os_calloc(nt ? nt : 1, sizeof *c->ref);
    }
    if (!c || !c->ok || !c->ref) {
        tlr_compute_destroy(c);
        return tl__err(TL_ERR_NOMEM, "run: compute: out of memory");
    }
    c->m = m;
    c->threads = o->compute_threads;
    s = tl_device_find("ggml:CPU", &c->cpu);
    if (s) {
        tlr_compute_destroy(c);
        return tl__err_prefix(s, "run: compute ggml: no ggml:CPU device");
    }
    if (c->threads > 0) s = tl__ggml_dev_set_threads(c->cpu, c->threads);
    if (s) {
        tlr_compute_destroy(c);
        return s;
    }
    *out = c;
    return TL_OK;
}

void tlr_compute_destroy(tlr_compute *c) {
    if (!c) return;
    if (c->ref)
        for (size_t i = 0; i < tl_model_tensor_count(c->m); i++)
            free(c->ref[i]);
    free(c->ref);
    free(c->ok);
    if (c->cpu) tl_device_release(c->cpu);
    free(c);
}

/* Is tensor i a 2-D weight ggml multiplies? (cached) */
/* Is acquired tensor st multiplied? (not one the session keeps converted: the reference is the
 * file's type) */
static bool multiplied(tlr_compute *c, const tl_session_tensor *st) {
    size_t i = st->index;
    if (st->info->dtype != tl_model_tensor(c->m, i)->dtype) return false;
    if (c->ok[i]) return c->ok[i] == 1;
    const tl_tensor_info *t = tl_model_tensor(c->m, i);
    uint64_t b;
    bool yes = t && t->n_dims == 2 && t->shape[0] > 0 && t->shape[1] > 0 &&
               t->shape[0] <= INT64_MAX && t->shape[1] <= INT64_MAX &&
               tl__ggml_weight_bytes(c->cpu, t->dtype, (int64_t)t->shape[0], (int64_t)t->shape[1],
                                     &b) == TL_OK;
    if (!yes) tl__err_clear();
    c->ok[i] = yes ? 1 : 2;
    return yes;
}

/* The products from the model's bytes of the tensors in jobs that have none yet. */
static tl_status references(tlr_compute *c, const job *jobs, size_t n) {
    tl__ggml_weight *ws = tl__os_calloc(n ? n : 1, sizeof *ws);
    size_t *which = tl__os_calloc(n ? n : 1, sizeof *which);
    if (!ws || !which) {
        free(ws);
        free(which);
        return tl__err(TL_ERR_NOMEM, "run: compute: out of memory");
    }
    size_t k = 0;
    tl_status s = TL_OK;
    for (size_t i = 0; i < n && !s; i++) {
        size_t t = jobs[i].tensor;
        if (c->ref[t]) continue;
        const tl_tensor_info *ti = tl_model_tensor(c->m, t);
        c->ref[t] = tl__os_malloc((size_t)ti->shape[0] * sizeof(float));
        if (!c->ref[t]) {
            s = tl__err(TL_ERR_NOMEM, "run: compute: out of memory");
            break;
        }
        which[k] = t;
        ws[k++] = (tl__ggml_weight){.dtype = ti->dtype,
                                    .rows = (int64_t)ti->shape[0],
                                    .cols = (int64_t)ti->shape[1],
                                    .host = tl_model_tensor_data(c->m, t),
                                    .y = c->ref[t]};
    }
    if (!s && k) s = tl__ggml_matvec_many(c->cpu, ws, k, SEED);
    if (s) /* no half-computed references stay behind */
        for (size_t i = 0; i < k; i++) {
            free(c->ref[which[i]]);
            c->ref[which[i]] = NULL;
        }
    free(ws);
    free(which);
    if (s) return tl__err_prefix(s, "run: the product from the file's bytes");
    return TL_OK;
}

static bool same(const float *y, const float *want, uint64_t n, bool exact) {
    if (exact) return memcmp(y, want, (size_t)n * sizeof *y) == 0;
    double scale = 0;
    for (uint64_t i = 0; i < n; i++)
        if (isfinite(want[i])) scale = fmax(scale, fabs((double)want[i]));
    for (uint64_t i = 0; i < n; i++) {
        if (y[i] == want[i] || (isnan(y[i]) && isnan(want[i])))
            continue; /* NaN rows: NaN either way */
        if (!(fabs((double)y[i] - (double)want[i]) <= 1e-3 * fmax(scale, 1e-6))) return false;
    }
    return true;
}

/* Job j: where part p of tensor t is multiplied, and from which memory. */
static tl_status prepare(tlr_compute *c, const tl_session_tensor *t, const tl_session_part *p,
                         job *j) {
    const tl_tensor_info *ti = t->info;
    uint64_t rb = p->row_begin, re = p->row_end;
    if (re <= rb) rb = 0, re = ti->shape[0];
    memset(j, 0, sizeof *j);
    j->tensor = t->index;
    j->row_begin = rb;
    j->w.dtype = ti->dtype;
    j->w.rows = (int64_t)(re - rb);
    j->w.cols = (int64_t)ti->shape[1];
    j->w.y = tl__os_malloc((size_t)j->w.rows * sizeof(float));
    if (!j->w.y) return tl__err(TL_ERR_NOMEM, "run: compute: out of memory");
    bool ggml_dev = p->device && tl__ggml_dev_of(p->device);
    if (p->tier != TL_TIER_DEVICE) {
        /* host memory: on the host-pointer ggml device it was given to, else ggml:CPU */
        j->dev = ggml_dev ? p->device : c->cpu;
        j->w.host = p->host;
        return TL_OK;
    }
    if (ggml_dev) {
        uint64_t need = p->nbytes;
        tl_status s = tl__ggml_weight_bytes(p->device, ti->dtype, j->w.rows, j->w.cols, &need);
        if (s) return tl__err_prefix(s, "tensor %s", ti->name);
        j->dev = p->device;
        if (need <= p->nbytes) { /* in place */
            j->w.dev = p->dptr;
            return TL_OK;
        }
        /* the backend pads rows past the allocation: computed there from a host copy */
    } else {
        j->dev = c->cpu;
    }
    if (tl__os_aligned_alloc(64, (size_t)((p->nbytes + 63) & ~63ull), &j->copy) != 0)
        return tl__err(TL_ERR_NOMEM, "tensor %s: out of memory for a host copy", ti->name);
    tl_status s = tl_device_copy_from(p->device, j->copy, p->dptr, p->nbytes);
    if (s) return tl__err_prefix(s, "tensor %s: reading it back for the product", ti->name);
    j->w.host = j->copy;
    return TL_OK;
}

tl_status tlr_compute_step(tlr_compute *c, const tl_acquired *a, tl_run_phase *ph) {
    size_t n = 0;
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *t = tl_acquired_tensor(a, i);
        if (multiplied(c, t)) n += t->n_parts;
    }
    if (!n) return TL_OK;
    job *jobs = tl__os_calloc(n, sizeof *jobs);
    tl__ggml_weight *ws = tl__os_calloc(n, sizeof *ws);
    size_t nj = 0;
    tl_status s = jobs && ws ? TL_OK : tl__err(TL_ERR_NOMEM, "run: compute: out of memory");
    for (size_t i = 0; i < tl_acquired_count(a) && !s; i++) {
        const tl_session_tensor *t = tl_acquired_tensor(a, i);
        if (!multiplied(c, t)) continue;
        for (uint32_t k = 0; k < t->n_parts && !s; k++)
            s = prepare(c, t, &t->parts[k], &jobs[nj++]);
    }
    /* one graph per device: the products of this step on it */
    for (size_t i = 0; i < nj && !s; i++) {
        if (jobs[i].done) continue;
        tl_device *d = jobs[i].dev;
        size_t k = 0;
        for (size_t x = i; x < nj; x++)
            if (!jobs[x].done && jobs[x].dev == d) ws[k++] = jobs[x].w;
        if (d != c->cpu && c->threads > 0) (void)tl__ggml_dev_set_threads(d, c->threads);
        double t0 = tl__os_now();
        s = tl__ggml_matvec_many(d, ws, k, SEED);
        ph->compute_seconds += tl__os_now() - t0;
        if (s) {
            s = tl__err_prefix(s, "run: products on %s", tl_device_name(d));
            break;
        }
        ph->products += k;
        for (size_t x = i; x < nj; x++)
            if (jobs[x].dev == d) jobs[x].done = true;
    }
    if (!s) s = references(c, jobs, nj);
    for (size_t i = 0; i < nj && !s; i++) {
        const float *want = c->ref[jobs[i].tensor] + jobs[i].row_begin;
        if (!same(jobs[i].w.y, want, (uint64_t)jobs[i].w.rows, jobs[i].dev == c->cpu))
            ph->product_mismatches++;
    }
    for (size_t i = 0; i < nj; i++) {
        free(jobs[i].w.y);
        free(jobs[i].copy);
    }
    free(jobs);
    free(ws);
    return s;
}
