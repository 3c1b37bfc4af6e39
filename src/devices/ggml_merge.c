/*
 * ggml_merge.c — a low-rank update W += sum_i s_i (up_i . down_i) of a weight
 * held by a ggml device, computed by a graph on that device: the factors go
 * up, ggml_mul_mat makes each product, ggml_scale and ggml_add apply it to an
 * F32 copy of the weight, and ggml_cpy rounds the sum into the weight's own
 * memory after each term. A ggml_sum of the result's values read back (four
 * bytes) tells whether any of them is not finite.
 */
#include "devices/ggml_merge.h"

#include "core/error.h"
#include "devices/devices.h"
#include "devices/ggml_dl.h"

#include <math.h>
#include <string.h>

bool tl__ggml_merges(tl_device *d) {
    return d && tl__ggml_api_get() && tl__ggml_dev_of(d) != NULL;
}

/* F32 temporaries of one graph (the weight's F32 copy and one product per term). */
#define TEMP_BYTES (8ull << 20)
/* Terms in one update. */
#define MAX_TERMS 16

/* Rows [r, r + nr) of the weight (bytes at addr of buf, row r first), as one graph on g. */
static tl_status chunk(tl__ggml_dev *g, void *buf, void *addr, tl_dtype dtype, int64_t r,
                       int64_t nr, int64_t cols, const tl__ggml_lowrank *terms, size_t n) {
    const tl__ggml_api *G = tl__ggml_api_get();
    const char *name = tl__ggml_dev_name(g);
    void *dev = tl__ggml_dev_handle(g);
    tl__ggml_init_params ip = {
        .mem_size = G->tensor_overhead() * (8 * n + 16) + G->graph_overhead() + 4096,
        .no_alloc = true};
    void *ctx = G->init(ip), *temps = NULL, *backend = NULL;
    if (!ctx) return tl__err(TL_ERR_NOMEM, "%s: ggml_init failed", name);
    tl_status s = TL_OK;
    void *wt = G->new_tensor_2d(ctx, (int)dtype, cols, nr);
    if (!wt) {
        s = tl__err(TL_ERR_DEVICE, "%s: building the weight's tensor failed", name);
        goto out;
    }
    s = tl__ggml_bind(wt, buf, addr, G->nbytes(wt), name);
    if (s) goto out;
    /* the graph: f = F32(W); per term f += s * (up . down), W = round(f); check = sum(F32(W)) */
    bool wide = dtype == TL_DTYPE_F32;
    void *f = wide ? wt : G->new_tensor_2d(ctx, TL_GGML_T_F32, cols, nr);
    void *cur = wide ? wt : (f ? G->cpy(ctx, wt, f) : NULL);
    void *ops[MAX_TERMS * 5 + 8], *down[MAX_TERMS], *ups[MAX_TERMS];
    size_t nops = 0;
    if (!cur) {
        s = tl__err(TL_ERR_DEVICE, "%s: building the weight's F32 copy failed", name);
        goto out;
    }
    if (!wide) ops[nops++] = cur;
    for (size_t i = 0; i < n; i++) {
        int64_t rank = (int64_t)terms[i].rank;
        down[i] = G->new_tensor_2d(ctx, TL_GGML_T_F32, rank, cols);
        ups[i] = G->new_tensor_2d(ctx, TL_GGML_T_F32, rank, nr);
        void *p = down[i] && ups[i] ? G->mul_mat(ctx, down[i], ups[i]) : NULL;
        void *sp = p ? G->scale_inplace(ctx, p, terms[i].scale) : NULL;
        cur = sp ? G->add_inplace(ctx, cur, sp) : NULL;
        if (cur) ops[nops++] = p, ops[nops++] = sp, ops[nops++] = cur;
        if (cur && !wide) { /* rounded into the weight's memory; read back for the next term */
            if ((cur = G->cpy(ctx, cur, wt))) ops[nops++] = cur;
            if (cur && i + 1 < n && (cur = G->cpy(ctx, cur, f))) ops[nops++] = cur;
        }
        if (!cur) {
            s = tl__err(TL_ERR_DEVICE, "%s: building the product of term %zu failed", name, i);
            goto out;
        }
    }
    void *back = wide ? cur : G->cpy(ctx, cur, f); /* the stored values, in F32 */
    void *check = back ? G->sum(ctx, back) : NULL;
    if (!check) {
        s = tl__err(TL_ERR_DEVICE, "%s: building the check of the merged values failed", name);
        goto out;
    }
    if (!wide) ops[nops++] = back;
    ops[nops++] = check;
    for (size_t i = 0; i < nops; i++)
        if (!G->dev_supports_op(dev, ops[i])) {
            s = tl__err(TL_ERR_UNSUPPORTED,
                        "%s: ggml cannot run operation %zu of a %s LoRA merge on this device",
                        name, i, tl_dtype_name(dtype));
            goto out;
        }
    temps = G->alloc_ctx_tensors_from_buft(ctx, tl__ggml_dev_buft(g));
    if (!temps) {
        s = tl__err(TL_ERR_DEVICE_OOM, "%s: no room for a LoRA merge's factors and temporaries",
                    name);
        goto out;
    }
    void *graph = G->new_graph(ctx);
    if (!graph) {
        s = tl__err(TL_ERR_NOMEM, "%s: ggml_new_graph failed", name);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        size_t rank = (size_t)terms[i].rank;
        G->tensor_set(down[i], terms[i].down_t, 0, (size_t)cols * rank * sizeof(float));
        G->tensor_set(ups[i], terms[i].up + (size_t)r * rank, 0, (size_t)nr * rank * sizeof(float));
    }
    G->build_forward_expand(graph, check);
    s = tl__ggml_dev_backend(g, &backend);
    if (s) goto out;
    tl__ggml_doing(g, "computing");
    int gs = G->graph_compute(backend, graph);
    tl__ggml_doing(g, NULL);
    if (gs != 0) {
        s = tl__err(TL_ERR_DEVICE, "%s: a LoRA merge's graph failed (ggml status %d)%s%s", name,
                    gs, *tl__ggml_last_log() ? ": " : "", tl__ggml_last_log());
        goto out;
    }
    float total = 0;
    G->tensor_get(check, &total, 0, sizeof total);
    if (!isfinite(total))
        s = tl__err(TL_ERR_FORMAT, "%s: a LoRA merge left values that are not finite", name);
out:
    if (temps) G->buffer_free(temps);
    G->free(ctx);
    return s;
}

tl_status tl__ggml_merge_lowrank(tl_device *d, tl_devptr w, tl_dtype dtype, int64_t rows,
                                 int64_t cols, const tl__ggml_lowrank *terms, size_t n) {
    tl__ggml_dev *g = tl__ggml_api_get() ? tl__ggml_dev_of(d) : NULL;
    if (!g)
        return tl__err(TL_ERR_INVALID_ARG, "%s: not a ggml device", d ? tl_device_name(d) : "(null)");
    const char *name = tl__ggml_dev_name(g);
    if (dtype != TL_DTYPE_F32 && dtype != TL_DTYPE_F16 && dtype != TL_DTYPE_BF16)
        return tl__err(TL_ERR_UNSUPPORTED, "%s: a LoRA merge on the device takes F32, F16 and "
                       "BF16 weights, not %s", name, tl_dtype_name(dtype));
    if (rows <= 0 || cols <= 0 || n == 0 || !terms)
        return tl__err(TL_ERR_INVALID_ARG, "%s: a LoRA merge of %lld x %lld with %zu terms", name,
                       (long long)rows, (long long)cols, n);
    if (n > MAX_TERMS)
        return tl__err(TL_ERR_UNSUPPORTED, "%s: a LoRA merge on the device takes %d terms at "
                       "most, not %zu", name, MAX_TERMS, n);
    for (size_t i = 0; i < n; i++)
        if (!terms[i].up || !terms[i].down_t || terms[i].rank == 0)
            return tl__err(TL_ERR_INVALID_ARG, "%s: LoRA merge term %zu is empty", name, i);
    uint64_t es = tl_dtype_block_bits(dtype) / 8, row = (uint64_t)cols * es;
    void *buf, *addr;
    tl_status s = tl__ggml_dev_resolve(g, w, (uint64_t)rows * row, &buf, &addr);
    if (s) return s;
    uint64_t per = TEMP_BYTES / (n + 1) / ((uint64_t)cols * 4);
    int64_t step = per ? (int64_t)per : 1;
    tl__ggml_dev_lock(g);
    for (int64_t r = 0; r < rows && !s; r += step) {
        int64_t nr = rows - r < step ? rows - r : step;
        s = chunk(g, buf, (char *)addr + (uint64_t)r * row, dtype, r, nr, cols, terms, n);
    }
    tl__ggml_dev_unlock(g);
    return s;
}
