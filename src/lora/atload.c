/*
 * atload.c — a LoRA set applied as each unit of a session loads
 * (tl_lora_set_create_at_load): the session's producer. Nothing is merged
 * ahead and the model may be read-only: when a unit of a targeted tensor
 * loads, its rows are read from the file's mapping into host memory (the
 * device's own memory on host-addressed devices, else a bounded buffer of the
 * session's), merged there with the merge kernel (rows of the unit only, all
 * cores), module after module in the order the LoRAs were added, and
 * rounded to the unit's type.
 *
 * F32 / F16 / BF16 weights are merged in their own type, each module rounded
 * once as tl_lora_apply rounds it: the bytes are tl_lora_apply's of the same
 * LoRAs in the same order. Q8_0 / Q4_0 weights are dequantized to F32, every
 * module added in F32, and the result requantized to the tensor's type (or
 * rounded to F16 when the set keeps them at F16); the largest difference
 * between the requantized values and the F32 merge is reported.
 *
 * With TL_LORA_ON_DEVICE the producer also hands out each F32 / F16 / BF16
 * target's plain modules as low-rank terms (the unit's rows of up, down
 * transposed, scale x alpha / rank), which a ggml device merges where the
 * unit lives (residency/xform.c); anything else is made by rows as above.
 */
#include "lora/lora.h"

#include "core/error.h"
#include "io/convert.h"
#include "os/guard.h"
#include "os/hostmem.h"
#include "os/os.h"
#include "os/thread.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    size_t tensor, seq;
    const tl_lora *l;
    size_t k;
    float scale;
} entry;

struct lora_atload {
    tl_model *m;
    tl__os_mutex mu; /* the table: a change waits for the rows being made */
    entry *e;        /* sorted by tensor, then in the order the LoRAs were added */
    size_t n;
    size_t *first; /* per tensor: its first entry; first[n_tensors] = n */
};

static bool is_quant(tl_dtype t) {
    return t == TL_DTYPE_Q8_0 || t == TL_DTYPE_Q4_0;
}

tl_status lora_atload_create(tl_model *m, lora_atload **out) {
    lora_atload *a = tl__os_calloc(1, sizeof *a);
    size_t nt = tl_model_tensor_count(m);
    if (a) a->first = tl__os_calloc(nt + 1, sizeof *a->first);
    if (!a || !a->first) {
        free(a);
        return tl__err(TL_ERR_NOMEM, "LoRA set: out of memory");
    }
    a->m = m;
    tl__os_mutex_init(&a->mu);
    *out = a;
    return TL_OK;
}

void lora_atload_destroy(lora_atload *a) {
    if (!a) return;
    tl__os_mutex_destroy(&a->mu);
    free(a->e);
    free(a->first);
    free(a);
}

tl_status lora_atload_fits(const tl_model *m, const tl_lora *l, size_t k, size_t t) {
    const tl_tensor_info *ti = tl_model_tensor(m, t);
    if (ti->dtype != TL_DTYPE_F32 && ti->dtype != TL_DTYPE_F16 && ti->dtype != TL_DTYPE_BF16 &&
        !is_quant(ti->dtype))
        return tl__err(TL_ERR_UNSUPPORTED,
                       "%s: tensor '%s' has type %s: a LoRA applied as it loads takes F32, F16, "
                       "BF16, Q8_0 and Q4_0 weights",
                       tl_model_file(m, ti->file)->path, ti->name, tl_dtype_name(ti->dtype));
    return lora_check_as(m, t, is_quant(ti->dtype) ? TL_DTYPE_F32 : ti->dtype, l, k);
}

static int cmp_entry(const void *x, const void *y) {
    const entry *p = x, *q = y;
    if (p->tensor != q->tensor) return p->tensor < q->tensor ? -1 : 1;
    return p->seq < q->seq ? -1 : p->seq > q->seq;
}

tl_status lora_atload_set(lora_atload *a, const lora_item *items, size_t n) {
    size_t cnt = 0;
    size_t **tg = tl__os_calloc(n ? n : 1, sizeof *tg);
    if (!tg) return tl__err(TL_ERR_NOMEM, "LoRA set: out of memory");
    tl_status st = TL_OK;
    for (size_t i = 0; i < n && !st; i++) {
        st = lora_targets(a->m, items[i].l, &tg[i]);
        for (size_t k = 0; !st && k < tl_lora_module_count(items[i].l); k++)
            cnt += tg[i][k] != TL_NOT_FOUND;
    }
    entry *e = st ? NULL : tl__os_malloc((cnt ? cnt : 1) * sizeof *e);
    if (!st && !e) st = tl__err(TL_ERR_NOMEM, "LoRA set: out of memory");
    size_t w = 0;
    for (size_t i = 0; i < n && !st; i++)
        for (size_t k = 0; k < tl_lora_module_count(items[i].l); k++)
            if (tg[i][k] != TL_NOT_FOUND)
                e[w] = (entry){tg[i][k], w, items[i].l, k, items[i].scale}, w++;
    for (size_t i = 0; i < n; i++)
        free(tg[i]);
    free(tg);
    if (st) {
        free(e);
        return st;
    }
    qsort(e, cnt, sizeof *e, cmp_entry);
    size_t nt = tl_model_tensor_count(a->m);
    tl__os_mutex_lock(&a->mu);
    free(a->e);
    a->e = e;
    a->n = cnt;
    for (size_t t = 0, j = 0; t <= nt; t++) {
        while (j < cnt && e[j].tensor < t)
            j++;
        a->first[t] = j;
    }
    tl__os_mutex_unlock(&a->mu);
    return TL_OK;
}

static bool wants(void *user, size_t t) {
    lora_atload *a = user;
    tl__os_mutex_lock(&a->mu);
    bool yes = a->first[t + 1] > a->first[t];
    tl__os_mutex_unlock(&a->mu);
    return yes;
}

/* A conversion reading the file's mapping, run as one guarded call. */
typedef struct conv_job {
    tl_dtype to, from;
    void *dst;
    const void *src;
    uint64_t n, bad;
    bool ok;
} conv_job;

static void conv_fn(void *arg) {
    conv_job *c = arg;
    c->ok = tl__convert_run(c->to, c->dst, c->from, c->src, c->n, &c->bad);
}

#define ERR_CHUNK 4096 /* elements compared at a time for the requantization error */

/* The largest |dequantized q - w| over n elements (w of type wt, q quantized). */
static double quant_error(const void *q, tl_dtype qt, const void *w, tl_dtype wt, uint64_t n) {
    float a[ERR_CHUNK], b[ERR_CHUNK];
    unsigned qb = tl_dtype_block_bits(qt) / 8, we = tl__convert_elem_size(wt);
    double e = 0;
    uint64_t bad;
    for (uint64_t o = 0; o < n; o += ERR_CHUNK) {
        uint64_t c = n - o < ERR_CHUNK ? n - o : ERR_CHUNK; /* whole blocks: n and the chunk are */
        tl__convert_run(TL_DTYPE_F32, a, qt, (const unsigned char *)q + o / 32 * qb, c, &bad);
        tl__convert_run(TL_DTYPE_F32, b, wt, (const unsigned char *)w + o * we, c, &bad);
        for (uint64_t i = 0; i < c; i++) {
            double d = fabs((double)a[i] - (double)b[i]);
            if (d > e) e = d;
        }
    }
    return e;
}

/* The producer: rows [r0, r1) of tensor t, the set's LoRAs merged, as type `to` at dst. */
static tl_status rows(void *user, size_t t, uint64_t r0, uint64_t r1, tl_dtype to, void *dst,
                      double *err) {
    lora_atload *a = user;
    const tl_tensor_info *ti = tl_model_tensor(a->m, t);
    const char *path = tl_model_file(a->m, ti->file)->path;
    tl_dtype from = ti->dtype, wt = is_quant(from) ? TL_DTYPE_F32 : from;
    uint64_t nrows = (uint64_t)ti->shape[0], kk = ti->n_elements / nrows, n = (r1 - r0) * kk;
    const unsigned char *src =
        (const unsigned char *)tl_model_tensor_data(a->m, t) + r0 * (ti->nbytes / nrows);
    *err = 0;
    /* the rows in the type they merge in: straight into dst when that is the unit's type */
    void *work = dst, *map = NULL;
    uint64_t map_len = 0;
    if (to != wt) {
        if (tl__os_anon_alloc(n * tl__convert_elem_size(wt), TL_OS_PAGES_SMALL, &map, &map_len))
            return tl__err(TL_ERR_NOMEM, "%s: tensor '%s': out of memory to merge a LoRA into",
                           path, ti->name);
        work = map;
    }
    conv_job c = {wt, from, work, src, n, 0, false};
    tl_status st = TL_OK;
    if (tl__os_guarded_call(conv_fn, &c) != 0)
        st = tl__err(TL_ERR_CHANGED, "%s: tensor '%s': the file changed while it was read", path,
                     ti->name);
    tl__os_mutex_lock(&a->mu);
    for (size_t j = a->first[t]; j < a->first[t + 1] && !st; j++)
        st = lora_merge_rows(a->m, t, wt, work, r0, r1, a->e[j].l, a->e[j].k, a->e[j].scale,
                             LORA_CHECK_WRITE);
    tl__os_mutex_unlock(&a->mu);
    if (!st && work != dst) {
        uint64_t bad;
        if (!tl__convert_run(to, dst, wt, work, n, &bad))
            st = tl__err(TL_ERR_FORMAT,
                         "%s: tensor '%s': the merged value of element %llu does not fit in %s",
                         path, ti->name, (unsigned long long)((r0 * kk) + bad), tl_dtype_name(to));
        else if (is_quant(to))
            *err = quant_error(dst, to, work, wt, n);
    }
    if (map) tl__os_anon_free(map, map_len);
    return st;
}

/* The factors lowrank hands out, freed by lowrank_done. */
typedef struct held {
    size_t n;
    float *v[]; /* up and down_t of each term */
} held;

static void lowrank_done(void *user, void *hold) {
    (void)user;
    held *h = hold;
    if (!h) return;
    for (size_t i = 0; i < h->n; i++)
        free(h->v[i]);
    free(h);
}

/* The producer's terms for a device merge: every module of tensor t, plain, in order. */
static tl_status lowrank(void *user, size_t t, uint64_t r0, uint64_t r1, tlr_lowrank *terms,
                         size_t cap, size_t *n, void **hold) {
    lora_atload *a = user;
    const tl_tensor_info *ti = tl_model_tensor(a->m, t);
    *n = 0;
    *hold = NULL;
    if (is_quant(ti->dtype))
        return tl__err(TL_ERR_UNSUPPORTED, "tensor '%s': %s weights merge on the host", ti->name,
                       tl_dtype_name(ti->dtype));
    tl_status st = TL_OK;
    tl__os_mutex_lock(&a->mu);
    size_t j0 = a->first[t], cnt = a->first[t + 1] - j0;
    held *h = NULL;
    if (cnt == 0 || cnt > cap)
        st = tl__err(TL_ERR_UNSUPPORTED, "tensor '%s': %zu LoRA modules (a device merges 1 to %zu)",
                     ti->name, cnt, cap);
    else if (!(h = tl__os_calloc(1, sizeof *h + 2 * cnt * sizeof h->v[0])))
        st = tl__err(TL_ERR_NOMEM, "LoRA set: out of memory");
    for (size_t j = 0; j < cnt && !st; j++) {
        const entry *e = &a->e[j0 + j];
        float *up, *down_t;
        st = lora_lowrank(a->m, t, e->l, e->k, e->scale, r0, r1, &up, &down_t, &terms[j].rank,
                          &terms[j].scale);
        if (st) break;
        h->v[h->n++] = up;
        h->v[h->n++] = down_t;
        terms[j].up = up;
        terms[j].down_t = down_t;
    }
    tl__os_mutex_unlock(&a->mu);
    if (st) {
        lowrank_done(a, h);
        return st;
    }
    *n = cnt;
    *hold = h;
    return TL_OK;
}

tlr_producer lora_atload_producer(lora_atload *a, bool on_device) {
    tlr_producer p = {wants, rows, a, NULL, NULL};
    if (on_device) {
        p.lowrank = lowrank;
        p.done = lowrank_done;
    }
    return p;
}
