/*
 * merge.c — the merge kernel: W' = W + s * delta, where delta is a LoRA
 * module's low-rank product (up . down), LoHa's Hadamard product of two
 * such products, or LoKr's Kronecker product. A weight of any rank is seen
 * as a matrix [out, K] (conv kernels [out, in*kh*kw]); delta is computed in
 * F32 row by row (memory: a few rows and the module's own small matrices),
 * added to the weight's row in F32 and rounded once to the weight's dtype.
 *
 * Nothing non-finite reaches a weight: a factor holding NaN or Inf, a
 * non-finite alpha/rank or scale, and a result that rounds to Inf or NaN in
 * the weight's type (a finite weight that overflows F16, say) are refused
 * naming the module. A dry pass finds them before any byte is written. Every
 * read of a mapping (the LoRA's factors, the weight's rows) is under the
 * SIGBUS guard: a file truncated meanwhile is TL_ERR_CHANGED, never a signal.
 */
#include "lora/lora.h"

#include "core/checked.h"
#include "core/error.h"
#include "io/convert.h"
#include "os/guard.h"
#include "os/os.h"

#include <math.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *lname(const tl_lora *l, size_t i) { return tl_model_tensor(l->file, i)->name; }

/* A LoRA tensor as a matrix [rows, cols] (rows = outermost dimension). */
typedef struct mat {
    uint64_t rows, cols;
    float *v; /* F32 copy */
} mat;

static tl_status mat_shape(const tl_lora *l, size_t i, mat *o) {
    const tl_tensor_info *ti = tl_model_tensor(l->file, i);
    if (ti->dtype != TL_DTYPE_F32 && ti->dtype != TL_DTYPE_F16 && ti->dtype != TL_DTYPE_BF16)
        return tl__err(TL_ERR_UNSUPPORTED, "%s: LoRA tensor '%s' has type %s (F32, F16, BF16 only)",
                      tl_model_file(l->file, 0)->path, ti->name, tl_dtype_name(ti->dtype));
    if (ti->n_dims < 1 || ti->shape[0] <= 0 || ti->n_elements == 0)
        return tl__err(TL_ERR_FORMAT, "%s: LoRA tensor '%s' is empty",
                      tl_model_file(l->file, 0)->path, ti->name);
    o->rows = (uint64_t)ti->shape[0];
    o->cols = ti->n_elements / o->rows;
    o->v = NULL;
    return TL_OK;
}

/* A dtype conversion run as one guarded call (no allocation inside: a fault jumps out). */
typedef struct conv_job {
    tl_dtype to, from;
    void *dst;
    const void *src;
    uint64_t n;
} conv_job;

static void conv_fn(void *arg) {
    conv_job *c = arg;
    uint64_t bad;
    tl__convert_run(c->to, c->dst, c->from, c->src, c->n, &bad);
}

static tl_status mat_load(const tl_lora *l, size_t k, size_t i, mat *o) {
    tl_status st = mat_shape(l, i, o);
    if (st) return st;
    const tl_tensor_info *ti = tl_model_tensor(l->file, i);
    const char *path = tl_model_file(l->file, 0)->path;
    uint64_t bytes;
    if (!tl__mul_u64(ti->n_elements, 4, &bytes) || bytes > SIZE_MAX)
        return tl__err(TL_ERR_NOMEM, "LoRA tensor '%s' too large", ti->name);
    const void *src = tl_model_tensor_data(l->file, i);
    if (!src)
        return tl__err(TL_ERR_UNSUPPORTED, "%s: LoRA tensor '%s' is not stored contiguously", path,
                       ti->name);
    o->v = tl__os_malloc((size_t)bytes);
    if (!o->v) return tl__err(TL_ERR_NOMEM, "LoRA tensor '%s': out of memory", ti->name);
    conv_job c = {TL_DTYPE_F32, ti->dtype, o->v, src, ti->n_elements};
    if (tl__os_guarded_call(conv_fn, &c) != 0)
        return tl__err(TL_ERR_CHANGED,
                       "%s: LoRA tensor '%s': the file changed while it was read (truncated?)",
                       path, ti->name);
    for (uint64_t j = 0; j < ti->n_elements; j++)
        if (!isfinite(o->v[j]))
            return tl__err(TL_ERR_FORMAT,
                           "%s: LoRA module '%s': tensor '%s' holds a non-finite value (%g at "
                           "element %llu); refused",
                           path, l->mods[k].key, ti->name, (double)o->v[j], (unsigned long long)j);
    return TL_OK;
}

/* a [m, r] . b [r, n] */
static tl_status mat_mul(const tl_lora *l, size_t k, const mat *a, const mat *b, size_t ia, mat *o) {
    if (a->cols != b->rows)
        return tl__err(TL_ERR_FORMAT, "%s: LoRA module '%s': inner sizes %llu and %llu differ",
                      tl_model_file(l->file, 0)->path, lname(l, ia),
                      (unsigned long long)a->cols, (unsigned long long)b->rows);
    uint64_t n;
    if (!tl__mul_u64(a->rows, b->cols, &n) || !tl__mul_u64(n, 4, &n) || n > SIZE_MAX)
        return tl__err(TL_ERR_NOMEM, "LoRA module '%s' too large", lname(l, ia));
    o->rows = a->rows;
    o->cols = b->cols;
    o->v = tl__os_calloc(1, (size_t)n);
    if (!o->v) return tl__err(TL_ERR_NOMEM, "LoRA module '%s': out of memory", lname(l, ia));
    for (uint64_t i = 0; i < a->rows; i++)
        for (uint64_t r = 0; r < a->cols; r++) {
            float x = a->v[i * a->cols + r];
            const float *br = b->v + r * b->cols;
            float *orow = o->v + i * o->cols;
            for (uint64_t j = 0; j < b->cols; j++) orow[j] += x * br[j];
        }
    for (uint64_t j = 0; j < a->rows * b->cols; j++)
        if (!isfinite(o->v[j]))
            return tl__err(TL_ERR_FORMAT,
                           "%s: LoRA module '%s': the product of its factors overflows F32; "
                           "refused",
                           tl_model_file(l->file, 0)->path, l->mods[k].key);
    return TL_OK;
}

static tl_status weight_matrix(const tl_model *m, size_t t, uint64_t *out, uint64_t *k) {
    const tl_tensor_info *w = tl_model_tensor(m, t);
    if (w->dtype != TL_DTYPE_F32 && w->dtype != TL_DTYPE_F16 && w->dtype != TL_DTYPE_BF16)
        return tl__err(TL_ERR_UNSUPPORTED,
                      "%s: tensor '%s' has type %s: a LoRA merges into F32, F16 or BF16 weights "
                      "only (dequantize it first)",
                      tl_model_file(m, w->file)->path, w->name, tl_dtype_name(w->dtype));
    if (w->n_dims < 1 || w->shape[0] <= 0 || w->n_elements == 0)
        return tl__err(TL_ERR_FORMAT, "tensor '%s' is empty", w->name);
    *out = (uint64_t)w->shape[0];
    *k = w->n_elements / *out;
    return TL_OK;
}

static tl_status mismatch(const tl_model *m, size_t t, const tl_lora *l, size_t k, const char *what) {
    const tl_tensor_info *w = tl_model_tensor(m, t);
    char shape[96] = "";
    size_t o = 0;
    for (uint32_t d = 0; d < w->n_dims && o + 24 < sizeof shape; d++)
        o += (size_t)snprintf(shape + o, sizeof shape - o, "%s%lld", d ? "x" : "",
                              (long long)w->shape[d]);
    return tl__err(TL_ERR_FORMAT, "%s: LoRA module '%s' does not fit tensor '%s' (%s): %s",
                  tl_model_file(l->file, 0)->path, l->mods[k].key, w->name, shape, what);
}

tl_status lora_check(const tl_model *m, size_t t, const tl_lora *l, size_t k) {
    uint64_t out = 0, kk = 0;
    tl_status st = weight_matrix(m, t, &out, &kk);
    if (st) return st;
    const lora_module *md = &l->mods[k];
    mat a, b, c, d;
    switch (md->kind) {
    case LORA_PLAIN:
        if ((st = mat_shape(l, md->part[P_UP], &a)) || (st = mat_shape(l, md->part[P_DOWN], &b)))
            return st;
        if (a.rows != out || b.cols != kk || a.cols != b.rows)
            return mismatch(m, t, l, k, "up [out, rank] . down [rank, in] has another shape");
        return TL_OK;
    case LORA_LOHA:
        if ((st = mat_shape(l, md->part[P_H1A], &a)) || (st = mat_shape(l, md->part[P_H1B], &b)) ||
            (st = mat_shape(l, md->part[P_H2A], &c)) || (st = mat_shape(l, md->part[P_H2B], &d)))
            return st;
        if (a.rows != out || c.rows != out || b.cols != kk || d.cols != kk || a.cols != b.rows ||
            c.cols != d.rows)
            return mismatch(m, t, l, k, "hada_w1_a . hada_w1_b and hada_w2_a . hada_w2_b differ");
        return TL_OK;
    case LORA_LOKR: {
        uint64_t r1, c1, r2, c2;
        if (md->part[P_K1] != TL_NOT_FOUND) {
            if ((st = mat_shape(l, md->part[P_K1], &a))) return st;
            r1 = a.rows, c1 = a.cols;
        } else {
            if ((st = mat_shape(l, md->part[P_K1A], &a)) || (st = mat_shape(l, md->part[P_K1B], &b)))
                return st;
            if (a.cols != b.rows) return mismatch(m, t, l, k, "lokr_w1_a . lokr_w1_b");
            r1 = a.rows, c1 = b.cols;
        }
        if (md->part[P_K2] != TL_NOT_FOUND) {
            if ((st = mat_shape(l, md->part[P_K2], &c))) return st;
            r2 = c.rows, c2 = c.cols;
        } else {
            if ((st = mat_shape(l, md->part[P_K2A], &c)) || (st = mat_shape(l, md->part[P_K2B], &d)))
                return st;
            if (c.cols != d.rows) return mismatch(m, t, l, k, "lokr_w2_a . lokr_w2_b");
            r2 = c.rows, c2 = d.cols;
        }
        uint64_t po, pk;
        if (!tl__mul_u64(r1, r2, &po) || !tl__mul_u64(c1, c2, &pk) || po != out || pk != kk)
            return mismatch(m, t, l, k, "kron(w1, w2) has another shape");
        return TL_OK;
    }
    }
    return mismatch(m, t, l, k, "unknown kind");
}

/* The factor alpha / rank (1 without alpha). */
static float alpha_factor(const tl_lora *l, size_t k) {
    const lora_module *md = &l->mods[k];
    if (!md->has_alpha) return 1.0f;
    size_t ri = TL_NOT_FOUND;
    if (md->kind == LORA_PLAIN) ri = md->part[P_DOWN];
    else if (md->kind == LORA_LOHA) ri = md->part[P_H1B];
    else if (md->part[P_K2B] != TL_NOT_FOUND) ri = md->part[P_K2B];
    else if (md->part[P_K1B] != TL_NOT_FOUND) ri = md->part[P_K1B];
    if (ri == TL_NOT_FOUND) return 1.0f; /* LoKr with full factors: alpha is not used */
    int64_t r = tl_model_tensor(l->file, ri)->shape[0];
    return r > 0 ? md->alpha / (float)r : 1.0f;
}

static void mat_free(mat *x) {
    free(x->v);
    x->v = NULL;
}

/* The row loop of one merge, run as one guarded call (everything allocated before). */
typedef struct row_job {
    const tl_tensor_info *wi;
    unsigned char *base;
    uint64_t out, kk;
    unsigned es;
    lora_kind kind;
    const mat *a, *b, *c, *d, *w1, *w2;
    float s;
    float *row, *dl, *d2;
    bool dry;          /* compute and check only; write nothing */
    uint64_t overflow; /* finite weights that the merge makes non-finite in the weight's type */
    uint64_t first_bad;
} row_job;

static void rows_fn(void *arg) {
    row_job *j = arg;
    uint64_t kk = j->kk;
    const mat *a = j->a, *b = j->b, *c = j->c, *d = j->d, *w1 = j->w1, *w2 = j->w2;
    float *row = j->row, *dl = j->dl, *d2 = j->d2;
    for (uint64_t o = 0; o < j->out; o++) {
        unsigned char *wr = j->base + o * kk * j->es;
        uint64_t bad;
        tl__convert_run(TL_DTYPE_F32, row, j->wi->dtype, wr, kk, &bad);
        if (j->kind == LORA_PLAIN || j->kind == LORA_LOHA) {
            memset(dl, 0, (size_t)kk * 4);
            for (uint64_t r = 0; r < a->cols; r++) {
                float u = a->v[o * a->cols + r];
                const float *br = b->v + r * b->cols;
                for (uint64_t x = 0; x < kk; x++) dl[x] += u * br[x];
            }
            if (j->kind == LORA_LOHA) {
                memset(d2, 0, (size_t)kk * 4);
                for (uint64_t r = 0; r < c->cols; r++) {
                    float u = c->v[o * c->cols + r];
                    const float *dr = d->v + r * d->cols;
                    for (uint64_t x = 0; x < kk; x++) d2[x] += u * dr[x];
                }
                for (uint64_t x = 0; x < kk; x++) dl[x] *= d2[x];
            }
        } else { /* kron: row o = i * r2 + jj; column p * c2 + q */
            uint64_t i = o / w2->rows, jj = o % w2->rows;
            for (uint64_t p = 0; p < w1->cols; p++) {
                float x = w1->v[i * w1->cols + p];
                const float *w2r = w2->v + jj * w2->cols;
                for (uint64_t q = 0; q < w2->cols; q++) dl[p * w2->cols + q] = x * w2r[q];
            }
        }
        if (!j->dry) {
            for (uint64_t x = 0; x < kk; x++) row[x] += j->s * dl[x];
            tl__convert_run(j->wi->dtype, wr, TL_DTYPE_F32, row, kk, &bad);
            continue;
        }
        /* the result, rounded to the weight's type and back (d2 is free again): what a write
         * would store, kept in dl beside the weight's own values in row */
        for (uint64_t x = 0; x < kk; x++) dl[x] = row[x] + j->s * dl[x];
        tl__convert_run(j->wi->dtype, d2, TL_DTYPE_F32, dl, kk, &bad);
        tl__convert_run(TL_DTYPE_F32, dl, j->wi->dtype, d2, kk, &bad);
        for (uint64_t x = 0; x < kk; x++)
            if (!isfinite(dl[x]) && isfinite(row[x]) && j->overflow++ == 0)
                j->first_bad = o * kk + x;
    }
}

tl_status lora_merge(const tl_model *m, size_t t, void *w, const tl_lora *l, size_t k,
                     float scale, lora_pass pass) {
    tl_status st = lora_check(m, t, l, k);
    if (st) return st;
    const tl_tensor_info *wi = tl_model_tensor(m, t);
    const char *lpath = tl_model_file(l->file, 0)->path;
    if (!w)
        return tl__err(TL_ERR_UNSUPPORTED,
                       "%s: tensor '%s' is not stored contiguously (a strided view): a LoRA "
                       "merges into contiguous weights only",
                       tl_model_file(m, wi->file)->path, wi->name);
    uint64_t out = (uint64_t)wi->shape[0], kk = wi->n_elements / out;
    unsigned es = tl__convert_elem_size(wi->dtype);
    const lora_module *md = &l->mods[k];
    float s = scale * alpha_factor(l, k);
    if (!isfinite(scale) || !isfinite(s))
        return tl__err(TL_ERR_INVALID_ARG,
                       "%s: LoRA module '%s': scale %g x alpha/rank is not finite; refused", lpath,
                       md->key, (double)scale);
    mat a = {0}, b = {0}, c = {0}, d = {0}, w1 = {0}, w2 = {0};
    float *row = NULL, *dl = NULL, *d2 = NULL;
    if (kk > SIZE_MAX / 4) return tl__err(TL_ERR_NOMEM, "tensor '%s' too large", wi->name);
    row = tl__os_malloc((size_t)kk * 4);
    dl = tl__os_malloc((size_t)kk * 4);
    d2 = tl__os_malloc((size_t)kk * 4);
    if (!row || !dl || !d2) {
        st = tl__err(TL_ERR_NOMEM, "merging into '%s': out of memory", wi->name);
        goto done;
    }
    if (md->kind == LORA_PLAIN) {
        if ((st = mat_load(l, k, md->part[P_UP], &a)) || (st = mat_load(l, k, md->part[P_DOWN], &b)))
            goto done;
    } else if (md->kind == LORA_LOHA) {
        if ((st = mat_load(l, k, md->part[P_H1A], &a)) || (st = mat_load(l, k, md->part[P_H1B], &b)) ||
            (st = mat_load(l, k, md->part[P_H2A], &c)) || (st = mat_load(l, k, md->part[P_H2B], &d)))
            goto done;
    } else {
        if (md->part[P_K1] != TL_NOT_FOUND) {
            if ((st = mat_load(l, k, md->part[P_K1], &w1))) goto done;
        } else {
            if ((st = mat_load(l, k, md->part[P_K1A], &a)) || (st = mat_load(l, k, md->part[P_K1B], &b)) ||
                (st = mat_mul(l, k, &a, &b, md->part[P_K1A], &w1)))
                goto done;
        }
        if (md->part[P_K2] != TL_NOT_FOUND) {
            if ((st = mat_load(l, k, md->part[P_K2], &w2))) goto done;
        } else {
            if ((st = mat_load(l, k, md->part[P_K2A], &c)) || (st = mat_load(l, k, md->part[P_K2B], &d)) ||
                (st = mat_mul(l, k, &c, &d, md->part[P_K2A], &w2)))
                goto done;
        }
    }
    /* the dry run (LORA_DRY, LORA_CHECK_WRITE), then the writing one (LORA_WRITE, LORA_CHECK_WRITE) */
    for (int wet = pass == LORA_WRITE; wet <= (pass != LORA_DRY) && !st; wet++) {
        row_job j = {wi,  w,  out, kk, es,  md->kind, &a, &b, &c, &d, &w1, &w2, s,
                     row, dl, d2,  !wet, 0,       0};
        if (tl__os_guarded_call(rows_fn, &j) != 0) {
            st = tl__err(TL_ERR_CHANGED,
                         "%s: tensor '%s': the file changed while LoRA module '%s' was merged "
                         "(truncated?)",
                         tl_model_file(m, wi->file)->path, wi->name, md->key);
        } else if (j.overflow) {
            st = tl__err(TL_ERR_FORMAT,
                         "%s: LoRA module '%s' (scale %g) makes %llu value(s) of tensor '%s' "
                         "overflow %s (the first at element %llu); refused",
                         lpath, md->key, (double)scale, (unsigned long long)j.overflow, wi->name,
                         tl_dtype_name(wi->dtype), (unsigned long long)j.first_bad);
        }
    }
done:
    mat_free(&a), mat_free(&b), mat_free(&c), mat_free(&d), mat_free(&w1), mat_free(&w2);
    free(row), free(dl), free(d2);
    return st;
}
