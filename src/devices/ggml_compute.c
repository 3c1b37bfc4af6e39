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

void tl_ggml_random_x(uint64_t seed, int64_t cols, float *x) {
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
static tl_status check_weight(const tl_ggml_api *G, const char *dev, tl_dtype dtype, int64_t rows,
                              int64_t cols, uint64_t *nbytes) {
    const char *tn = tl_dtype_name(dtype);
    if ((int)dtype < 0 || (int)dtype >= TL_GGML_TYPE_COUNT || !tn)
        return tl_err(TL_ERR_UNSUPPORTED, "%s: %s is not a ggml type", dev, tn ? tn : "(invalid)");
    const char *gn = G->type_name((int)dtype);
    if (!gn || strcasecmp(gn, tn) != 0)
        return tl_err(TL_ERR_UNSUPPORTED, "%s: this ggml has no type %s", dev, tn);
    if (rows <= 0 || cols <= 0)
        return tl_err(TL_ERR_INVALID_ARG, "%s: a %lld x %lld matrix is empty", dev, (long long)rows,
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
        return tl_err(TL_ERR_UNSUPPORTED, "%s: ggml does not multiply %s weights", dev, tn);
    default:
        break;
    }
    uint32_t blk = tl_dtype_block_elems(dtype);
    if (G->blck_size((int)dtype) != (int64_t)blk ||
        (uint64_t)G->type_size((int)dtype) * 8 != tl_dtype_block_bits(dtype))
        return tl_err(TL_ERR_UNSUPPORTED, "%s: ggml's %s blocks differ from tierload's", dev, tn);
    if (cols % blk)
        return tl_err(TL_ERR_INVALID_ARG, "%s: rows of %lld %s elements are not whole blocks of %u",
                      dev, (long long)cols, tn, blk);
    uint64_t n;
    if (__builtin_mul_overflow((uint64_t)rows, (uint64_t)cols, &n) ||
        !tl_dtype_nbytes(dtype, n, nbytes) || *nbytes > SIZE_MAX / 2)
        return tl_err(TL_ERR_INVALID_ARG, "%s: a %lld x %lld %s matrix is too large", dev,
                      (long long)rows, (long long)cols, tn);
    return TL_OK;
}

/* The product with W at addr inside ggml buffer buf (which ends where ggml says). */
static tl_status compute(tl_ggml_dev *g, void *buf, void *addr, tl_dtype dtype, int64_t rows,
                         int64_t cols, uint64_t nbytes, uint64_t seed, float *y) {
    const tl_ggml_api *G = tl_ggml_api_get();
    const char *name = tl_ggml_dev_name(g);
    float *x = tl_os_malloc((size_t)cols * sizeof *x);
    if (!x) return tl_err(TL_ERR_NOMEM, "%s: out of memory", name);
    tl_ggml_random_x(seed, cols, x);

    tl_ggml_dev_lock(g);
    tl_status s = TL_OK;
    void *xy = NULL;
    tl_ggml_init_params ip = {.mem_size = G->tensor_overhead() * 8 + G->graph_overhead() + 4096,
                              .no_alloc = true};
    void *ctx = G->init(ip);
    if (!ctx) {
        s = tl_err(TL_ERR_NOMEM, "%s: ggml_init failed", name);
        goto out;
    }
    void *w = G->new_tensor_2d(ctx, (int)dtype, cols, rows);
    void *xt = G->new_tensor_1d(ctx, TL_GGML_T_F32, cols);
    void *yt = w && xt ? G->mul_mat(ctx, w, xt) : NULL;
    if (!yt) {
        s = tl_err(TL_ERR_DEVICE, "%s: building the product failed", name);
        goto out;
    }
    if (G->nbytes(w) != nbytes) {
        s = tl_err(TL_ERR_UNSUPPORTED, "%s: ggml sizes the %s weight at %zu bytes, not %llu", name,
                   tl_dtype_name(dtype), G->nbytes(w), (unsigned long long)nbytes);
        goto out;
    }
    char *end = (char *)G->buffer_get_base(buf) + G->buffer_get_size(buf);
    size_t need = G->buffer_get_alloc_size(buf, w);
    if ((char *)addr > end || need > (size_t)(end - (char *)addr)) {
        s = tl_err(TL_ERR_INVALID_ARG,
                   "%s: the weight needs %zu bytes in its buffer (ggml pads it), %zu are there",
                   name, need, (size_t)(end - (char *)addr));
        goto out;
    }
    if (G->tensor_alloc(buf, w, addr) != 0) {
        s = tl_err(TL_ERR_DEVICE, "%s: placing the weight failed: %s", name, tl_ggml_last_log());
        goto out;
    }
    if (!G->dev_supports_op(tl_ggml_dev_handle(g), yt)) {
        s = tl_err(TL_ERR_UNSUPPORTED, "%s: ggml cannot multiply %s weights on this device", name,
                   tl_dtype_name(dtype));
        goto out;
    }
    xy = G->alloc_ctx_tensors_from_buft(ctx, tl_ggml_dev_buft(g));
    if (!xy) {
        s = tl_err(TL_ERR_DEVICE_OOM, "%s: no room for the product's vectors", name);
        goto out;
    }
    G->tensor_set(xt, x, 0, (size_t)cols * sizeof *x);
    void *graph = G->new_graph(ctx);
    void *backend = NULL;
    if (!graph) {
        s = tl_err(TL_ERR_NOMEM, "%s: ggml_new_graph failed", name);
        goto out;
    }
    G->build_forward_expand(graph, yt);
    s = tl_ggml_dev_backend(g, &backend);
    if (s != TL_OK) goto out;
    int gs = G->graph_compute(backend, graph);
    if (gs != 0) {
        s = tl_err(TL_ERR_DEVICE, "%s: graph compute failed (ggml status %d)%s%s", name, gs,
                   *tl_ggml_last_log() ? ": " : "", tl_ggml_last_log());
        goto out;
    }
    G->tensor_get(yt, y, 0, (size_t)rows * sizeof *y);
out:
    if (xy) G->buffer_free(xy);
    if (ctx) G->free(ctx);
    tl_ggml_dev_unlock(g);
    free(x);
    return s;
}

static tl_status ggml_dev(tl_device *d, tl_ggml_dev **g) {
    *g = tl_ggml_dev_of(d);
    if (!*g || !tl_ggml_api_get())
        return tl_err(TL_ERR_INVALID_ARG, "%s: not a ggml device",
                      d ? tl_device_name(d) : "(null)");
    return TL_OK;
}

tl_status tl_ggml_weight_bytes(tl_device *d, tl_dtype dtype, int64_t rows, int64_t cols,
                               uint64_t *bytes) {
    tl_ggml_dev *g;
    tl_status s = ggml_dev(d, &g);
    if (s != TL_OK) return s;
    const tl_ggml_api *G = tl_ggml_api_get();
    s = check_weight(G, tl_ggml_dev_name(g), dtype, rows, cols, bytes);
    if (s != TL_OK) return s;
    tl_ggml_init_params ip = {.mem_size = G->tensor_overhead() + 256, .no_alloc = true};
    void *ctx = G->init(ip);
    void *w = ctx ? G->new_tensor_2d(ctx, (int)dtype, cols, rows) : NULL;
    if (!w) {
        if (ctx) G->free(ctx);
        return tl_err(TL_ERR_NOMEM, "%s: ggml_init failed", tl_ggml_dev_name(g));
    }
    size_t need = G->buft_get_alloc_size(tl_ggml_dev_buft(g), w);
    G->free(ctx);
    if (need > *bytes) *bytes = need;
    return TL_OK;
}

tl_status tl_ggml_matvec(tl_device *d, tl_devptr w, tl_dtype dtype, int64_t rows, int64_t cols,
                         uint64_t seed, float *y) {
    tl_ggml_dev *g;
    tl_status s = ggml_dev(d, &g);
    if (s != TL_OK) return s;
    if (!y) return tl_err(TL_ERR_INVALID_ARG, "%s: matvec: y is NULL", tl_ggml_dev_name(g));
    uint64_t nbytes;
    s = check_weight(tl_ggml_api_get(), tl_ggml_dev_name(g), dtype, rows, cols, &nbytes);
    if (s != TL_OK) return s;
    void *buf, *addr;
    s = tl_ggml_dev_resolve(g, w, nbytes, &buf, &addr);
    if (s != TL_OK) return s;
    return compute(g, buf, addr, dtype, rows, cols, nbytes, seed, y);
}

tl_status tl_ggml_matvec_host(tl_device *d, const void *w, tl_dtype dtype, int64_t rows,
                              int64_t cols, uint64_t seed, float *y) {
    tl_ggml_dev *g;
    tl_status s = ggml_dev(d, &g);
    if (s != TL_OK) return s;
    if (!y || !w)
        return tl_err(TL_ERR_INVALID_ARG, "%s: matvec: NULL pointer", tl_ggml_dev_name(g));
    uint64_t nbytes;
    s = check_weight(tl_ggml_api_get(), tl_ggml_dev_name(g), dtype, rows, cols, &nbytes);
    if (s != TL_OK) return s;
    if (tl_ggml_dev_host_mappable(g)) {
        tl_ggml_host_buffer hb;
        s = tl_ggml_host_buffer_create(d, w, nbytes, &hb);
        if (s != TL_OK) return s;
        s = compute(g, hb.buffer, (char *)hb.base + hb.offset, dtype, rows, cols, nbytes, seed, y);
        tl_ggml_host_buffer_destroy(&hb);
        return s;
    }
    /* the device cannot read host memory: a temporary copy in its own memory */
    tl_devptr p = 0;
    uint64_t room = nbytes;
    s = tl_ggml_weight_bytes(d, dtype, rows, cols, &room);
    if (s == TL_OK) s = tl_device_alloc(d, room, &p);
    if (s == TL_OK) s = tl_device_copy_to(d, p, w, nbytes);
    if (s == TL_OK) s = tl_ggml_matvec(d, p, dtype, rows, cols, seed, y);
    tl_device_free(d, p);
    return s;
}

tl_status tl_ggml_matvec_tensor(tl_device *d, const tl_model *m, size_t i, uint64_t seed, float **y,
                                int64_t *rows) {
    if (!m || !y || !rows)
        return tl_err(TL_ERR_INVALID_ARG, "tl_ggml_matvec_tensor: NULL argument");
    *y = NULL;
    *rows = 0;
    const tl_tensor_info *t = tl_model_tensor(m, i);
    if (!t) return tl_err(TL_ERR_NOT_FOUND, "no tensor %zu", i);
    const tl_file_info *f = tl_model_file(m, t->file);
    const char *path = f ? f->path : "?";
    if (t->n_dims != 2)
        return tl_err(TL_ERR_INVALID_ARG, "%s: tensor '%s' has %u dimensions, not 2", path, t->name,
                      t->n_dims);
    const void *data = tl_model_tensor_data(m, i);
    float *out = tl_os_malloc((size_t)(t->shape[0] > 0 ? t->shape[0] : 1) * sizeof *out);
    if (!data || !out) {
        free(out);
        return tl_err(TL_ERR_NOMEM, "%s: tensor '%s': out of memory", path, t->name);
    }
    tl_status s = tl_ggml_matvec_host(d, data, t->dtype, t->shape[0], t->shape[1], seed, out);
    if (s != TL_OK) {
        free(out);
        return tl_err_prefix(s, "%s: tensor '%s'", path, t->name);
    }
    *y = out;
    *rows = t->shape[0];
    return TL_OK;
}
