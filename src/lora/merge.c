/*
 * merge.c — the merge kernel: W' = W + s * delta, where delta is a LoRA
 * module's low-rank product (up . down), LoHa's Hadamard product of two
 * such products, or LoKr's Kronecker product. A weight of any rank is seen
 * as a matrix [out, K] (conv kernels [out, in*kh*kw]); delta is computed in
 * F32 in cache-sized tiles of a row, added to the weight in F32 and rounded
 * once to the weight's dtype. The rows of a large module are split over
 * threads (every CPU the process may use; TIERLOAD_MERGE_THREADS caps it);
 * the bytes are the same for any thread count (see rows_fn). Memory: 12 KiB
 * of tiles per thread, the module's own small matrices and, for a check and
 * write in one call, the rounded results of a tensor of at most 16 MiB.
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
#include "core/env.h"
#include "core/error.h"
#include "io/convert.h"
#include "os/guard.h"
#include "os/hostmem.h"
#include "os/os.h"
#include "os/thread.h"

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

/* Tensor t as a matrix [out, k], its bytes seen as type dt (F32, F16 or BF16). */
static tl_status weight_matrix(const tl_model *m, size_t t, tl_dtype dt, uint64_t *out,
                               uint64_t *k) {
    const tl_tensor_info *w = tl_model_tensor(m, t);
    if (dt != TL_DTYPE_F32 && dt != TL_DTYPE_F16 && dt != TL_DTYPE_BF16)
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

tl_status lora_check_as(const tl_model *m, size_t t, tl_dtype dt, const tl_lora *l, size_t k) {
    uint64_t out = 0, kk = 0;
    tl_status st = weight_matrix(m, t, dt, &out, &kk);
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

tl_status lora_check(const tl_model *m, size_t t, const tl_lora *l, size_t k) {
    return lora_check_as(m, t, tl_model_tensor(m, t)->dtype, l, k);
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

/*
 * The row loop, blocked. A weight row is processed in tiles of TILE columns: the tile of the
 * weight (converted to F32), of the delta and of the second LoHa product stay in L1 while the
 * rank rows of the down factor's tile are streamed over it, so each element is read and written
 * once per pass. The multiply-add runs over blocks of VEC elements with a constant trip count,
 * which gcc (-O2's very cheap vectoriser) and clang turn into vector code with no intrinsics; the
 * remainder of a row (< VEC) takes the same arithmetic in scalar code.
 *
 * Summation order per element is unchanged from the row-by-row kernel (and independent of how
 * rows are split between threads): delta = ((0 + u_0 b_0) + u_1 b_1) + ... over the rank in
 * order, times the second product for LoHa, then w + s * delta, rounded once. No FMA contraction
 * (ISO C mode: -ffp-contract=off), so the merged bytes are bit-identical for any thread count.
 *
 * Memory: three tiles per thread (3 x TILE floats, 12 KiB, on the worker's stack) beside the
 * module's own F32 matrices, which every thread reads.
 */
#define TILE 1024
#define VEC 16

/* d[x] += u * s[x], x < n */
static void madd(float *restrict d, float u, const float *restrict s, uint64_t n) {
    uint64_t x = 0;
    for (; x + VEC <= n; x += VEC)
        for (unsigned v = 0; v < VEC; v++) d[x + v] += u * s[x + v];
    for (; x < n; x++) d[x] += u * s[x];
}

/* d[x] = w[x] + s * d[x], x < n */
static void wadd(float *restrict d, float s, const float *restrict w, uint64_t n) {
    uint64_t x = 0;
    for (; x + VEC <= n; x += VEC)
        for (unsigned v = 0; v < VEC; v++) d[x + v] = w[x + v] + s * d[x + v];
    for (; x < n; x++) d[x] = w[x] + s * d[x];
}

/* d[x] *= e[x], x < n */
static void hmul(float *restrict d, const float *restrict e, uint64_t n) {
    uint64_t x = 0;
    for (; x + VEC <= n; x += VEC)
        for (unsigned v = 0; v < VEC; v++) d[x + v] *= e[x + v];
    for (; x < n; x++) d[x] *= e[x];
}

/* The rows [o0, o1) of one pass of one merge, run as one guarded call (nothing allocated). */
typedef struct row_job {
    const tl_tensor_info *wi;
    tl_dtype dt;         /* the type of the bytes at base */
    unsigned char *base; /* row row0 of the weight */
    uint64_t row0;
    uint64_t out, kk;
    unsigned es;
    lora_kind kind;
    const mat *a, *b, *c, *d, *w1, *w2;
    float s;
    bool dry;            /* compute and check only; write nothing */
    unsigned char *keep; /* dry: where the rounded results go (the tensor's size), or NULL */
    uint64_t o0, o1;     /* the rows of this job */
    uint64_t overflow;   /* finite weights that the merge makes non-finite in the weight's type */
    uint64_t first_bad;
    int faulted;         /* the guarded call's result (a worker's) */
} row_job;

/* row*a (rank r) . b[:, x0 .. x0+n) into dl (n <= TILE) */
static void lowrank_tile(const mat *a, const mat *b, uint64_t o, uint64_t x0, uint64_t n,
                         float *restrict dl) {
    memset(dl, 0, (size_t)n * 4);
    const float *ar = a->v + o * a->cols;
    for (uint64_t r = 0; r < a->cols; r++) madd(dl, ar[r], b->v + r * b->cols + x0, n);
}

static void rows_fn(void *arg) {
    row_job *j = arg;
    uint64_t kk = j->kk;
    const mat *w1 = j->w1, *w2 = j->w2;
    float row[TILE], dl[TILE], d2[TILE];
    for (uint64_t o = j->o0; o < j->o1; o++) {
        unsigned char *wr = j->base + (o - j->row0) * kk * j->es;
        for (uint64_t x0 = 0; x0 < kk; x0 += TILE) {
            uint64_t n = kk - x0 < TILE ? kk - x0 : TILE, bad;
            unsigned char *wt = wr + x0 * j->es;
            tl__convert_run(TL_DTYPE_F32, row, j->dt, wt, n, &bad);
            if (j->kind == LORA_PLAIN || j->kind == LORA_LOHA) {
                lowrank_tile(j->a, j->b, o, x0, n, dl);
                if (j->kind == LORA_LOHA) {
                    lowrank_tile(j->c, j->d, o, x0, n, d2);
                    hmul(dl, d2, n);
                }
            } else { /* kron: row o = i * r2 + jj; column x = p * c2 + q */
                uint64_t i = o / w2->rows, jj = o % w2->rows, c2 = w2->cols;
                const float *w2r = w2->v + jj * c2;
                uint64_t p = x0 / c2, q = x0 % c2;
                for (uint64_t x = 0; x < n; p++, q = 0) {
                    float f = w1->v[i * w1->cols + p];
                    for (; q < c2 && x < n; q++, x++) dl[x] = f * w2r[q];
                }
            }
            wadd(dl, j->s, row, n); /* the merged values in F32 */
            if (!j->dry) {
                tl__convert_run(j->dt, wt, TL_DTYPE_F32, dl, n, &bad);
                continue;
            }
            /* rounded to the weight's type (into d2, free again, or the kept results) and
             * back: what a write would store, beside the weight's own values in row */
            void *rt = j->keep ? j->keep + ((o - j->row0) * kk + x0) * j->es : (void *)d2;
            tl__convert_run(j->dt, rt, TL_DTYPE_F32, dl, n, &bad);
            tl__convert_run(TL_DTYPE_F32, dl, j->dt, rt, n, &bad);
            for (uint64_t x = 0; x < n; x++)
                if (!isfinite(dl[x]) && isfinite(row[x]) && j->overflow++ == 0)
                    j->first_bad = o * kk + x0 + x;
        }
    }
}

static void *rows_worker(void *arg) {
    row_job *j = arg;
    j->faulted = tl__os_guarded_call(rows_fn, j);
    return NULL;
}

#define MAX_THREADS 64
/* The largest tensor whose dry-run results a checked write keeps (see lora_merge). */
#define KEEP_MAX (16u << 20)
/* Work (multiply-adds) below which one more thread costs more than it saves. */
#define MIN_WORK_PER_THREAD (1u << 18)

/* How many threads one pass over [out, kk] at this rank should use. */
static unsigned pass_threads(uint64_t out, uint64_t kk, uint64_t rank) {
    unsigned n = tl__os_cpu_count();
    const char *e = tl__env_get(TL_ENV_MERGE_THREADS);
    if (e) {
        char *end;
        unsigned long v = strtoul(e, &end, 10);
        if (*end == '\0' && v >= 1) n = v < MAX_THREADS ? (unsigned)v : MAX_THREADS;
    }
    if (n > MAX_THREADS) n = MAX_THREADS;
    uint64_t work = out * kk * (rank + 2) / MIN_WORK_PER_THREAD;
    if (work < n) n = work ? (unsigned)work : 1u;
    if (out < n) n = (unsigned)out;
    return n ? n : 1u;
}

/*
 * One pass over every row: the rows split in contiguous ranges over n threads (the caller runs
 * the first; a thread that cannot start has its range run by the caller too). The result is the
 * same for any split: rows are independent. 0, or nonzero when a read or write faulted.
 */
static int run_pass(row_job *proto, unsigned n) {
    row_job jobs[MAX_THREADS];
    tl__os_thread *th[MAX_THREADS] = {0};
    uint64_t a = proto->o0, rows = proto->o1 - proto->o0;
    for (unsigned i = 0; i < n; i++) {
        jobs[i] = *proto;
        jobs[i].o0 = a + rows * i / n;
        jobs[i].o1 = a + rows * (i + 1) / n;
    }
    for (unsigned i = 1; i < n; i++)
        if (tl__os_thread_start(&th[i], rows_worker, &jobs[i]) != 0) th[i] = NULL;
    rows_worker(&jobs[0]);
    for (unsigned i = 1; i < n; i++)
        if (!th[i]) rows_worker(&jobs[i]);
    int faulted = 0;
    row_job *r = proto;
    for (unsigned i = 0; i < n; i++) {
        tl__os_thread_join(th[i]);
        if (jobs[i].faulted) faulted = jobs[i].faulted;
        /* ranges in row order: the first overflow is the first range's that has one */
        if (jobs[i].overflow && r->overflow == 0) r->first_bad = jobs[i].first_bad;
        r->overflow += jobs[i].overflow;
    }
    return faulted;
}

tl_status lora_merge(const tl_model *m, size_t t, void *w, const tl_lora *l, size_t k,
                     float scale, lora_pass pass) {
    const tl_tensor_info *ti = tl_model_tensor(m, t);
    uint64_t rows = ti->n_dims >= 1 && ti->shape[0] > 0 ? (uint64_t)ti->shape[0] : 0;
    return lora_merge_rows(m, t, ti->dtype, w, 0, rows, l, k, scale, pass);
}

/* *s = scale x alpha / rank of module k, refused when either is not finite. */
static tl_status term_scale(const tl_lora *l, size_t k, float scale, float *s) {
    *s = scale * alpha_factor(l, k);
    if (isfinite(scale) && isfinite(*s)) return TL_OK;
    return tl__err(TL_ERR_INVALID_ARG,
                   "%s: LoRA module '%s': scale %g x alpha/rank is not finite; refused",
                   tl_model_file(l->file, 0)->path, l->mods[k].key, (double)scale);
}

tl_status lora_merge_rows(const tl_model *m, size_t t, tl_dtype dt, void *w, uint64_t r0,
                          uint64_t r1, const tl_lora *l, size_t k, float scale, lora_pass pass) {
    tl_status st = lora_check_as(m, t, dt, l, k);
    if (st) return st;
    const tl_tensor_info *wi = tl_model_tensor(m, t);
    const char *lpath = tl_model_file(l->file, 0)->path;
    if (!w)
        return tl__err(TL_ERR_UNSUPPORTED,
                       "%s: tensor '%s' is not stored contiguously (a strided view): a LoRA "
                       "merges into contiguous weights only",
                       tl_model_file(m, wi->file)->path, wi->name);
    uint64_t out = (uint64_t)wi->shape[0], kk = wi->n_elements / out;
    unsigned es = tl__convert_elem_size(dt);
    if (r0 > r1 || r1 > out)
        return tl__err(TL_ERR_INVALID_ARG, "tensor '%s': rows [%llu, %llu) of %llu", wi->name,
                       (unsigned long long)r0, (unsigned long long)r1, (unsigned long long)out);
    uint64_t nbytes = (r1 - r0) * kk * es; /* the bytes at w */
    const lora_module *md = &l->mods[k];
    float s;
    if ((st = term_scale(l, k, scale, &s))) return st;
    mat a = {0}, b = {0}, c = {0}, d = {0}, w1 = {0}, w2 = {0};
    unsigned char *keep = NULL;
    void *keep_map = NULL;
    uint64_t keep_len = 0;
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
    /*
     * The dry run (LORA_DRY, LORA_CHECK_WRITE), then the writing one (LORA_WRITE,
     * LORA_CHECK_WRITE). Checked and written in one call, a tensor of at most KEEP_MAX bytes
     * keeps the dry run's rounded results (the bytes a write would store) and copies them in
     * instead of computing them again: extra memory at most KEEP_MAX.
     */
    uint64_t rank = md->kind == LORA_PLAIN ? a.cols : md->kind == LORA_LOHA ? a.cols + c.cols : 1;
    unsigned nth = pass_threads(r1 - r0, kk, rank);
    /* mapped, not malloc'd: given back at once, whatever the allocator (or ASan) keeps */
    if (pass == LORA_CHECK_WRITE && nbytes <= KEEP_MAX && nbytes > 0 &&
        tl__os_anon_alloc(nbytes, TL_OS_PAGES_KERNEL, &keep_map, &keep_len) == 0)
        keep = keep_map; /* else computed twice */
    for (int wet = pass == LORA_WRITE; wet <= (pass != LORA_DRY) && !st; wet++) {
        if (wet && keep) {
            if (tl__os_guarded_copy(w, keep, (size_t)nbytes) != 0)
                st = tl__err(TL_ERR_CHANGED,
                             "%s: tensor '%s': the file changed while LoRA module '%s' was "
                             "merged (truncated?)",
                             tl_model_file(m, wi->file)->path, wi->name, md->key);
            break;
        }
        row_job j = {.wi = wi, .dt = dt, .base = w, .row0 = r0, .out = out, .kk = kk, .es = es,
                     .kind = md->kind, .a = &a, .b = &b, .c = &c, .d = &d, .w1 = &w1, .w2 = &w2,
                     .s = s, .dry = !wet, .keep = wet ? NULL : keep, .o0 = r0, .o1 = r1};
        if (run_pass(&j, nth) != 0) {
            st = tl__err(TL_ERR_CHANGED,
                         "%s: tensor '%s': the file changed while LoRA module '%s' was merged "
                         "(truncated?)",
                         tl_model_file(m, wi->file)->path, wi->name, md->key);
        } else if (j.overflow) {
            st = tl__err(TL_ERR_FORMAT,
                         "%s: LoRA module '%s' (scale %g) makes %llu value(s) of tensor '%s' "
                         "overflow %s (the first at element %llu); refused",
                         lpath, md->key, (double)scale, (unsigned long long)j.overflow, wi->name,
                         tl_dtype_name(dt), (unsigned long long)j.first_bad);
        }
    }
done:
    mat_free(&a), mat_free(&b), mat_free(&c), mat_free(&d), mat_free(&w1), mat_free(&w2);
    if (keep_map) tl__os_anon_free(keep_map, keep_len);
    return st;
}

tl_status lora_lowrank(const tl_model *m, size_t t, const tl_lora *l, size_t k, float scale,
                       uint64_t r0, uint64_t r1, float **up, float **down_t, uint64_t *rank,
                       float *s) {
    *up = *down_t = NULL;
    const tl_tensor_info *wi = tl_model_tensor(m, t);
    const lora_module *md = &l->mods[k];
    if (md->kind != LORA_PLAIN)
        return tl__err(TL_ERR_UNSUPPORTED, "%s: LoRA module '%s' is not a plain low-rank one",
                       tl_model_file(l->file, 0)->path, md->key);
    tl_status st = lora_check_as(m, t, wi->dtype, l, k);
    if (st) return st;
    uint64_t out = (uint64_t)wi->shape[0], kk = wi->n_elements / out;
    if (r0 >= r1 || r1 > out)
        return tl__err(TL_ERR_INVALID_ARG, "tensor '%s': rows [%llu, %llu) of %llu", wi->name,
                       (unsigned long long)r0, (unsigned long long)r1, (unsigned long long)out);
    if ((st = term_scale(l, k, scale, s))) return st;
    mat a = {0}, b = {0};
    if ((st = mat_load(l, k, md->part[P_UP], &a)) || (st = mat_load(l, k, md->part[P_DOWN], &b)))
        goto done;
    /* up: its rows [r0, r1) moved to the front; down [rank, kk] transposed to [kk, rank] */
    memmove(a.v, a.v + r0 * a.cols, (size_t)((r1 - r0) * a.cols) * sizeof *a.v);
    float *dt = tl__os_malloc((size_t)(b.rows * b.cols) * sizeof *dt);
    if (!dt) {
        st = tl__err(TL_ERR_NOMEM, "LoRA module '%s': out of memory", md->key);
        goto done;
    }
    for (uint64_t r = 0; r < b.rows; r++)
        for (uint64_t x = 0; x < kk; x++)
            dt[x * b.rows + r] = b.v[r * b.cols + x];
    *rank = b.rows;
    *up = a.v;
    *down_t = dt;
    a.v = NULL;
done:
    mat_free(&a), mat_free(&b);
    return st;
}
