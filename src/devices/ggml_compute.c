/*
 * ggml_compute.c — matrix products on ggml devices: y = W . x with
 * ggml_mul_mat for one 2-D weight W of any type ggml multiplies (quantized
 * ones included) and a fixed random x, computed by a one-node graph on the
 * device. W is placed where it already is (a tierload allocation of the
 * device, or host memory wrapped in place) and never copied when the device
 * can read it there; x and y get a small buffer of the device's own.
 *
 * This is how a product computed from memory tierload placed is compared with
 * the same product computed from the file's own bytes: one wrong byte in W
 * changes y.
 */
#include "core/error.h"
#include "devices/devices.h"
#include "devices/ggml_dl.h"
#include "os/os.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void tl__ggml_random_x(uint64_t seed, int64_t cols, float *x) {
    uint64_t s = seed ? seed : 0x9E3779B97F4A7C15ull;
    for (int64_t i = 0; i < cols; i++) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        uint64_t r = s * 0x2545F4914F6CDD1Dull;
        x[i] = (float)((double)(r >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
    }
}

/*
 * Is dtype a type this ggml multiplies, with rows x cols elements? *nbytes =
 * W's size. Checked here because ggml aborts (or its CPU backend has no dot
 * product) on what it does not support.
 */
static tl_status check_weight(const tl__ggml_api *G, const char *dev, tl_dtype dtype, int64_t rows,
                              int64_t cols, uint64_t *nbytes) {
    const char *tn = tl_dtype_name(dtype);
    if ((int)dtype < 0 || (int)dtype >= TL_GGML_TYPE_COUNT || !tn)
        return tl__err(TL_ERR_UNSUPPORTED, "%s: %s is not a ggml type", dev, tn ? tn : "(invalid)");
    const char *gn = G->type_name((int)dtype);
    if (!gn || strcasecmp(gn, tn) != 0)
        return tl__err(TL_ERR_UNSUPPORTED, "%s: this ggml has no type %s", dev, tn);
    if (rows <= 0 || cols <= 0)
        return tl__err(TL_ERR_INVALID_ARG, "%s: a %lld x %lld matrix is empty", dev, (long long)rows,
                      (long long)cols);
    switch (dtype) {
    /* ggml has no dot product with these as the weight (they only hold data or activations) */
    case TL_DTYPE_I8:
    case TL_DTYPE_I16:
    case TL_DTYPE_I32:
    case TL_DTYPE_I64:
    case TL_DTYPE_F64:
    case TL_DTYPE_Q8_1:
    case TL_DTYPE_Q8_K:
        return tl__err(TL_ERR_UNSUPPORTED, "%s: ggml does not multiply %s weights", dev, tn);
    default:
        break;
    }
    uint32_t blk = tl_dtype_block_elems(dtype);
    if (G->blck_size((int)dtype) != (int64_t)blk ||
        (uint64_t)G->type_size((int)dtype) * 8 != tl_dtype_block_bits(dtype))
        return tl__err(TL_ERR_UNSUPPORTED, "%s: ggml's %s blocks differ from tierload's", dev, tn);
    if (cols % blk)
        return tl__err(TL_ERR_INVALID_ARG, "%s: rows of %lld %s elements are not whole blocks of %u",
                      dev, (long long)cols, tn, blk);
    uint64_t n;
    if (__builtin_mul_overflow((uint64_t)rows, (uint64_t)cols, &n) ||
        !tl_dtype_nbytes(dtype, n, nbytes) || *nbytes > SIZE_MAX / 2)
        return tl__err(TL_ERR_INVALID_ARG, "%s: a %lld x %lld %s matrix is too large", dev,
                      (long long)rows, (long long)cols, tn);
    return TL_OK;
}

/* One product of a graph: where W is, and what was made to put it there. */
typedef struct slot {
    void *buf, *addr;       /* W's ggml buffer and address in it */
    uint64_t nbytes;        /* W's size */
    tl_ggml_host_buffer hb; /* host memory wrapped in place */
    tl_devptr tmp;          /* a temporary copy on the device */
} slot;

/* The products of ws[0..n) (n <= GRAPH_MAX) as one graph on g (compute lock held). */
static tl_status compute(tl__ggml_dev *g, tl__ggml_weight *ws, slot *sl, size_t n, uint64_t seed) {
    const tl__ggml_api *G = tl__ggml_api_get();
    const char *name = tl__ggml_dev_name(g);
    tl_status s = TL_OK;
    void *xy = NULL, **xt = NULL, **yt = NULL;
    float *x = NULL;
    int64_t max_cols = 1;
    for (size_t i = 0; i < n; i++)
        if (ws[i].cols > max_cols) max_cols = ws[i].cols;
    tl__ggml_init_params ip = {.mem_size =
                                  G->tensor_overhead() * (3 * n + 8) + G->graph_overhead() + 4096,
                              .no_alloc = true};
    void *ctx = G->init(ip);
    xt = tl__os_calloc(n, sizeof *xt);
    yt = tl__os_calloc(n, sizeof *yt);
    x = tl__os_malloc((size_t)max_cols * sizeof *x);
    if (!ctx || !xt || !yt || !x) {
        s = tl__err(TL_ERR_NOMEM, "%s: out of memory", name);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const tl__ggml_weight *w = &ws[i];
        void *wt = G->new_tensor_2d(ctx, (int)w->dtype, w->cols, w->rows);
        xt[i] = G->new_tensor_1d(ctx, TL_GGML_T_F32, w->cols);
        yt[i] = wt && xt[i] ? G->mul_mat(ctx, wt, xt[i]) : NULL;
        if (!yt[i]) {
            s = tl__err(TL_ERR_DEVICE, "%s: building product %zu failed", name, i);
            goto out;
        }
        if (G->nbytes(wt) != sl[i].nbytes) {
            s = tl__err(TL_ERR_UNSUPPORTED, "%s: ggml sizes the %s weight at %zu bytes, not %llu",
                       name, tl_dtype_name(w->dtype), G->nbytes(wt),
                       (unsigned long long)sl[i].nbytes);
            goto out;
        }
        char *end = (char *)G->buffer_get_base(sl[i].buf) + G->buffer_get_size(sl[i].buf);
        size_t need = G->buffer_get_alloc_size(sl[i].buf, wt);
        if ((char *)sl[i].addr > end || need > (size_t)(end - (char *)sl[i].addr)) {
            s = tl__err(TL_ERR_INVALID_ARG,
                       "%s: the weight needs %zu bytes in its buffer (ggml pads it; see "
                       "tl__ggml_weight_bytes), %zu are there",
                       name, need, (size_t)(end - (char *)sl[i].addr));
            goto out;
        }
        if (G->tensor_alloc(sl[i].buf, wt, sl[i].addr) != 0) {
            s = tl__err(TL_ERR_DEVICE, "%s: placing the weight failed: %s", name,
                       tl__ggml_last_log());
            goto out;
        }
        if (!G->dev_supports_op(tl__ggml_dev_handle(g), yt[i])) {
            s = tl__err(TL_ERR_UNSUPPORTED, "%s: ggml cannot multiply %s weights on this device",
                       name, tl_dtype_name(w->dtype));
            goto out;
        }
    }
    tl__ggml_doing(g, "computing"); /* from here each call may reach an RPC server */
    xy = G->alloc_ctx_tensors_from_buft(ctx, tl__ggml_dev_buft(g));
    if (!xy) {
        s = tl__err(TL_ERR_DEVICE_OOM, "%s: no room for the products' vectors", name);
        goto out;
    }
    void *graph = G->new_graph(ctx);
    void *backend = NULL;
    if (!graph) {
        s = tl__err(TL_ERR_NOMEM, "%s: ggml_new_graph failed", name);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        tl__ggml_random_x(seed, ws[i].cols, x);
        G->tensor_set(xt[i], x, 0, (size_t)ws[i].cols * sizeof *x);
        G->build_forward_expand(graph, yt[i]);
    }
    s = tl__ggml_dev_backend(g, &backend);
    if (s != TL_OK) goto out;
    int gs = G->graph_compute(backend, graph);
    if (gs != 0) {
        s = tl__err(TL_ERR_DEVICE, "%s: graph compute failed (ggml status %d)%s%s", name, gs,
                   *tl__ggml_last_log() ? ": " : "", tl__ggml_last_log());
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        G->tensor_get(yt[i], ws[i].y, 0, (size_t)ws[i].rows * sizeof(float));
out:
    if (xy) G->buffer_free(xy);
    tl__ggml_doing(g, NULL);
    if (ctx) G->free(ctx);
    free(xt);
    free(yt);
    free(x);
    return s;
}

static tl_status ggml_dev(tl_device *d, tl__ggml_dev **g) {
    *g = tl__ggml_dev_of(d);
    if (!*g || !tl__ggml_api_get())
        return tl__err(TL_ERR_INVALID_ARG, "%s: not a ggml device",
                      d ? tl_device_name(d) : "(null)");
    return TL_OK;
}

tl_status tl__ggml_weight_bytes(tl_device *d, tl_dtype dtype, int64_t rows, int64_t cols,
                               uint64_t *bytes) {
    tl__ggml_dev *g;
    tl_status s = ggml_dev(d, &g);
    if (s != TL_OK) return s;
    const tl__ggml_api *G = tl__ggml_api_get();
    s = check_weight(G, tl__ggml_dev_name(g), dtype, rows, cols, bytes);
    if (s != TL_OK) return s;
    tl__ggml_init_params ip = {.mem_size = G->tensor_overhead() + 256, .no_alloc = true};
    void *ctx = G->init(ip);
    void *w = ctx ? G->new_tensor_2d(ctx, (int)dtype, cols, rows) : NULL;
    if (!w) {
        if (ctx) G->free(ctx);
        return tl__err(TL_ERR_NOMEM, "%s: ggml_init failed", tl__ggml_dev_name(g));
    }
    size_t need = G->buft_get_alloc_size(tl__ggml_dev_buft(g), w);
    G->free(ctx);
    if (need > *bytes) *bytes = need;
    return TL_OK;
}

/* Products per graph: nodes and leaves stay well inside ggml's default graph size (2048). */
#define GRAPH_MAX 256

tl_status tl__ggml_matvec_many(tl_device *d, tl__ggml_weight *ws, size_t n, uint64_t seed) {
    tl__ggml_dev *g;
    tl_status s = ggml_dev(d, &g);
    if (s != TL_OK) return s;
    const char *name = tl__ggml_dev_name(g);
    if (n == 0) return TL_OK;
    if (!ws) return tl__err(TL_ERR_INVALID_ARG, "%s: matvec: no weights", name);
    slot *sl = tl__os_calloc(n, sizeof *sl);
    if (!sl) return tl__err(TL_ERR_NOMEM, "%s: out of memory", name);
    size_t ready = 0;
    for (; ready < n && s == TL_OK; ready++) {
        tl__ggml_weight *w = &ws[ready];
        slot *o = &sl[ready];
        if (!w->y) {
            s = tl__err(TL_ERR_INVALID_ARG, "%s: matvec: weight %zu has no y", name, ready);
            break;
        }
        s = check_weight(tl__ggml_api_get(), name, w->dtype, w->rows, w->cols, &o->nbytes);
        if (s != TL_OK) break;
        if (!w->host) {
            s = tl__ggml_dev_resolve(g, w->dev, o->nbytes, &o->buf, &o->addr);
        } else if (tl__ggml_dev_host_mappable(g)) {
            s = tl_ggml_host_buffer_create(d, w->host, o->nbytes, &o->hb);
            o->buf = o->hb.buffer;
            o->addr = (char *)o->hb.base + o->hb.offset;
        } else {
            /* the device cannot read host memory: a temporary copy in its own memory */
            uint64_t room = o->nbytes;
            s = tl__ggml_weight_bytes(d, w->dtype, w->rows, w->cols, &room);
            if (s == TL_OK) s = tl_device_alloc(d, room, &o->tmp);
            if (s == TL_OK) s = tl_device_copy_to(d, o->tmp, w->host, o->nbytes);
            if (s == TL_OK) s = tl__ggml_dev_resolve(g, o->tmp, o->nbytes, &o->buf, &o->addr);
        }
    }
    if (s == TL_OK) {
        tl__ggml_dev_lock(g);
        for (size_t at = 0; at < n && s == TL_OK; at += GRAPH_MAX)
            s = compute(g, ws + at, sl + at, n - at < GRAPH_MAX ? n - at : GRAPH_MAX, seed);
        tl__ggml_dev_unlock(g);
    }
    for (size_t i = 0; i < n; i++) { /* untouched slots are zero */
        tl_ggml_host_buffer_destroy(&sl[i].hb);
        if (sl[i].tmp) tl_device_free(d, sl[i].tmp);
    }
    free(sl);
    return s;
}

tl_status tl__ggml_matvec(tl_device *d, tl_devptr w, tl_dtype dtype, int64_t rows, int64_t cols,
                         uint64_t seed, float *y) {
    tl__ggml_weight one = {.dtype = dtype, .rows = rows, .cols = cols, .dev = w, .y = y};
    return tl__ggml_matvec_many(d, &one, 1, seed);
}

tl_status tl__ggml_matvec_host(tl_device *d, const void *w, tl_dtype dtype, int64_t rows,
                              int64_t cols, uint64_t seed, float *y) {
    if (!w) return tl__err(TL_ERR_INVALID_ARG, "%s: matvec: NULL weight", tl_device_name(d));
    tl__ggml_weight one = {.dtype = dtype, .rows = rows, .cols = cols, .host = w, .y = y};
    return tl__ggml_matvec_many(d, &one, 1, seed);
}

tl_status tl__ggml_matvec_tensor(tl_device *d, const tl_model *m, size_t i, uint64_t seed, float **y,
                                int64_t *rows) {
    if (!m || !y || !rows)
        return tl__err(TL_ERR_INVALID_ARG, "tl__ggml_matvec_tensor: NULL argument");
    *y = NULL;
    *rows = 0;
    const tl_tensor_info *t = tl_model_tensor(m, i);
    if (!t) return tl__err(TL_ERR_NOT_FOUND, "no tensor %zu", i);
    const tl_file_info *f = tl_model_file(m, t->file);
    const char *path = f ? f->path : "?";
    if (t->n_dims != 2)
        return tl__err(TL_ERR_INVALID_ARG, "%s: tensor '%s' has %u dimensions, not 2", path, t->name,
                      t->n_dims);
    const void *data = tl_model_tensor_data(m, i);
    float *out = tl__os_malloc((size_t)(t->shape[0] > 0 ? t->shape[0] : 1) * sizeof *out);
    if (!data || !out) {
        free(out);
        return tl__err(TL_ERR_NOMEM, "%s: tensor '%s': out of memory", path, t->name);
    }
    tl_status s = tl__ggml_matvec_host(d, data, t->dtype, t->shape[0], t->shape[1], seed, out);
    if (s != TL_OK) {
        free(out);
        return tl__err_prefix(s, "%s: tensor '%s'", path, t->name);
    }
    *y = out;
    *rows = t->shape[0];
    return TL_OK;
}
