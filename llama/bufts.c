/*
 * bufts.c — the CPU's extra buffer types, as llama.cpp's own load uses them.
 *
 * llama_model_init_from_user sets use_extra_bufts to false, so on its own it
 * keeps every CPU weight in the plain CPU buffer, where llama.cpp's own load
 * (use_extra_bufts true, its default) puts the weights the CPU backend can
 * repack (Q4_0, Q4_K, ... on this CPU) into CPU_REPACK, whose matrix
 * products are other kernels with other rounding. To give the same model,
 * each weight is tested here exactly as llama.cpp's loader tests it
 * (weight_buft_supported: a MUL_MAT of the weight by an F32 [ne0, 512]
 * batch, the weight in a dummy buffer of each extra type in order, asked of
 * the CPU device), and the weights that an extra type takes are sent there
 * with a tensor_buft_override (an override to a type other than the plain
 * CPU one is used as given). One override per extra type, its pattern
 * grouped by layer set ("blk\.[0-9]+\.(attn_q|ffn_up)\.weight"), since
 * llama.cpp compiles every pattern again for every tensor it creates.
 *
 * The weights tested are those llama.cpp multiplies (2-D, in a block or the
 * output projection, not biases); the token embedding is read with GET_ROWS,
 * which no extra type supports. Nothing is overridden when a GPU device
 * takes weights: then llama.cpp's own load puts CPU weights in the GPU's
 * host buffer, ahead of the extra types, as the plain path does.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ggml-backend.h>

/* Does llama.cpp's device list (params.devices, else every GPU) hold a GPU? */
static bool gpu_takes_weights(const struct llama_model_params *p) {
    if (p->n_gpu_layers == 0) return false;
    if (p->devices) {
        for (ggml_backend_dev_t *d = p->devices; *d; d++) {
            enum ggml_backend_dev_type t = ggml_backend_dev_type(*d);
            if (t == GGML_BACKEND_DEVICE_TYPE_GPU || t == GGML_BACKEND_DEVICE_TYPE_IGPU)
                return true;
        }
        return false;
    }
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        enum ggml_backend_dev_type t = ggml_backend_dev_type(ggml_backend_dev_get(i));
        if (t == GGML_BACKEND_DEVICE_TYPE_GPU || t == GGML_BACKEND_DEVICE_TYPE_IGPU) return true;
    }
    return false;
}

/* An accelerator (BLAS, ...) comes before the extra types in llama.cpp's CPU list. */
static bool accel_first(void) {
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t d = ggml_backend_dev_get(i);
        if (ggml_backend_dev_type(d) == GGML_BACKEND_DEVICE_TYPE_ACCEL &&
            ggml_backend_dev_buffer_type(d) != ggml_backend_cpu_buffer_type())
            return true;
    }
    return false;
}

/* Would llama.cpp multiply this tensor (MUL_MAT with it as the weight)? */
static bool multiplied(const tl_tensor_info *t) {
    size_t n = strlen(t->name);
    if (t->n_dims != 2 || t->dtype >= TL_GGML_TYPE_COUNT) return false;
    if (n < 7 || strcmp(t->name + n - 7, ".weight")) return false;
    return !strncmp(t->name, "blk.", 4) || !strcmp(t->name, "output.weight");
}

/* The first extra type that takes the weight (llama.cpp's select_weight_buft), or -1. */
static int pick(ggml_backend_dev_t cpu, ggml_backend_buffer_type_t *extra, size_t n_extra,
                const tl_tensor_info *t) {
    struct ggml_init_params ip = {ggml_tensor_overhead() * 4, NULL, true};
    struct ggml_context *ctx = ggml_init(ip);
    if (!ctx) return -1;
    int64_t ne0 = t->shape[1], ne1 = t->shape[0];
    struct ggml_tensor *w = ggml_new_tensor_2d(ctx, (enum ggml_type)t->dtype, ne0, ne1);
    struct ggml_tensor *b = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, ne0, 512, 1, 1);
    struct ggml_tensor *op = ggml_mul_mat(ctx, w, b);
    int found = -1;
    for (size_t k = 0; k < n_extra && found < 0; k++) {
        w->buffer = ggml_backend_buft_alloc_buffer(extra[k], 0);
        if (!w->buffer) continue;
        if (ggml_backend_dev_supports_op(cpu, op)) found = (int)k;
        ggml_backend_buffer_free(w->buffer);
        w->buffer = NULL;
    }
    ggml_free(ctx);
    return found;
}

/* Growing string. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void put(sbuf *s, const char *txt, size_t n) {
    if (s->oom) return;
    if (s->n + n + 1 > s->cap) {
        size_t cap = (s->n + n + 1) * 2;
        char *p = realloc(s->p, cap);
        if (!p) {
            s->oom = true;
            return;
        }
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->n, txt, n);
    s->n += n;
    s->p[s->n] = 0;
}

/* A name as a regular expression matching exactly it. */
static void put_literal(sbuf *s, const char *txt, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (strchr(".[]{}()\\*+?^$|", txt[i])) put(s, "\\", 1);
        put(s, txt + i, 1);
    }
}

/* "blk.N.rest": N and rest; false for other names. */
static bool split_block(const char *name, long *layer, const char **rest) {
    if (strncmp(name, "blk.", 4)) return false;
    char *end;
    long n = strtol(name + 4, &end, 10);
    if (end == name + 4 || *end != '.') return false;
    *layer = n;
    *rest = end + 1;
    return true;
}

/*
 * One pattern for the weights chosen[] marks (and the name extra, if any):
 * names outside blocks literally, block tensors as "blk\.[0-9]+\.(a|b)" for
 * each name tail that every block having it has chosen, and the rest
 * literally.
 */
static char *pattern_for(const tl_model *m, const bool *chosen, const char *extra) {
    size_t n = tl_model_tensor_count(m);
    sbuf s = {0};
    put(&s, "^(", 2);
    bool first = true, any_all = false;
    /* tails whose every occurrence is chosen */
    sbuf all = {0};
    bool *done = calloc(n ? n : 1, 1);
    if (!done) return NULL;
    for (size_t i = 0; i < n; i++) {
        long layer;
        const char *rest;
        const tl_tensor_info *t = tl_model_tensor(m, i);
        if (!chosen[i] || done[i] || !split_block(t->name, &layer, &rest)) continue;
        bool every = true;
        for (size_t j = 0; j < n; j++) {
            long l2;
            const char *r2;
            if (split_block(tl_model_tensor(m, j)->name, &l2, &r2) && !strcmp(r2, rest)) {
                if (!chosen[j]) every = false;
            }
        }
        if (!every) continue;
        for (size_t j = 0; j < n; j++) {
            long l2;
            const char *r2;
            if (split_block(tl_model_tensor(m, j)->name, &l2, &r2) && !strcmp(r2, rest))
                done[j] = true;
        }
        if (any_all) put(&all, "|", 1);
        put_literal(&all, rest, strlen(rest));
        any_all = true;
    }
    if (any_all) {
        put(&s, "blk\\.[0-9]+\\.(", strlen("blk\\.[0-9]+\\.("));
        put(&s, all.p, all.n);
        put(&s, ")", 1);
        first = false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!chosen[i] || done[i]) continue;
        const char *name = tl_model_tensor(m, i)->name;
        if (!first) put(&s, "|", 1);
        put_literal(&s, name, strlen(name));
        first = false;
    }
    if (extra) {
        if (!first) put(&s, "|", 1);
        put_literal(&s, extra, strlen(extra));
    }
    put(&s, ")$", 2);
    free(all.p);
    free(done);
    if (s.oom || all.oom) {
        free(s.p);
        return NULL;
    }
    return s.p;
}

void tl__llama_overrides_free(tl__llama_overrides *o) {
    if (!o) return;
    for (size_t i = 0; i < o->n_patterns; i++)
        free(o->patterns[i]);
    free(o->patterns);
    free(o->list);
    memset(o, 0, sizeof *o);
}

tl_status tl__llama_overrides_make(const tl_model *m, const struct llama_model_params *params,
                                   bool tied_output, tl__llama_overrides *out) {
    memset(out, 0, sizeof *out);
    if (!params->use_extra_bufts || gpu_takes_weights(params) || accel_first()) return TL_OK;
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!cpu) return TL_OK;
    ggml_backend_dev_get_extra_bufts_t get =
        (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(
            ggml_backend_dev_backend_reg(cpu), "ggml_backend_dev_get_extra_bufts");
    ggml_backend_buffer_type_t *extra = get ? get(cpu) : NULL;
    size_t n_extra = 0;
    while (extra && extra[n_extra])
        n_extra++;
    if (!n_extra) return TL_OK;

    size_t n = tl_model_tensor_count(m);
    int *where = malloc((n ? n : 1) * sizeof *where);
    bool *chosen = malloc(n ? n : 1);
    size_t n_user = 0;
    if (params->tensor_buft_overrides)
        while (params->tensor_buft_overrides[n_user].pattern)
            n_user++;
    out->list = calloc(n_user + n_extra + 1, sizeof *out->list);
    out->patterns = calloc(n_extra, sizeof *out->patterns);
    if (!where || !chosen || !out->list || !out->patterns) {
        free(where);
        free(chosen);
        tl__llama_overrides_free(out);
        return tl_set_error(TL_ERR_NOMEM, "tl_llama_model_load: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        where[i] = multiplied(t) ? pick(cpu, extra, n_extra, t) : -1;
        if (where[i] >= 0) out->n_tensors++;
    }
    int tied = -1; /* where the output projection, token_embd's twin, goes */
    size_t te = tied_output ? tl_model_find(m, "token_embd.weight") : TL_NOT_FOUND;
    if (te != TL_NOT_FOUND) {
        tl_tensor_info t = *tl_model_tensor(m, te);
        t.name = "output.weight";
        tied = multiplied(&t) ? pick(cpu, extra, n_extra, &t) : -1;
        if (tied >= 0) out->n_tensors++;
    }
    for (size_t i = 0; i < n_user; i++)
        out->list[i] = params->tensor_buft_overrides[i];
    size_t at = n_user;
    for (size_t k = 0; k < n_extra; k++) {
        bool any = false;
        for (size_t i = 0; i < n; i++)
            any |= (chosen[i] = where[i] == (int)k);
        if (!any && tied != (int)k) continue;
        char *p = pattern_for(m, chosen, tied == (int)k ? "output.weight" : NULL);
        if (!p) {
            free(where);
            free(chosen);
            tl__llama_overrides_free(out);
            return tl_set_error(TL_ERR_NOMEM, "tl_llama_model_load: out of memory");
        }
        out->patterns[out->n_patterns++] = p;
        out->list[at].pattern = p;
        out->list[at++].buft = extra[k];
    }
    free(where);
    free(chosen);
    if (at == n_user) tl__llama_overrides_free(out); /* nothing to add */
    return TL_OK;
}
