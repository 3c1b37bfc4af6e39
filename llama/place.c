/*
 * place.c — tierload's planner deciding llama.cpp's placement
 * (tl_llama_options.plan): the GPU devices llama.cpp would use become plan
 * devices (memory as ggml reports it), the model's layers a summary, and the
 * plan's decision for the LLM (component "other") becomes llama.cpp's
 * params: each GPU's layers (and the output layer, with the first GPU's)
 * sent to that device's buffer type by tensor_buft_overrides, layers the
 * plan keeps in RAM to the CPU, devices / n_gpu_layers / tensor_split set so
 * that llama.cpp's own per-layer device (its KV cache, its scheduling)
 * agrees as far as it can. A row split becomes llama.cpp's row split with
 * the plan's shares. The caller's overrides stay first.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ggml-backend.h>

static bool is_gpu(ggml_backend_dev_t d) {
    enum ggml_backend_dev_type t = ggml_backend_dev_type(d);
    return t == GGML_BACKEND_DEVICE_TYPE_GPU || t == GGML_BACKEND_DEVICE_TYPE_IGPU;
}

/* The blk number of layer k of component other (its first tensor's name); -1 when none. */
static long block_of(const tl_model *m, size_t k) {
    const size_t *idx;
    size_t n = tl_model_layer_tensors(m, TL_COMP_OTHER, k, &idx);
    for (size_t i = 0; i < n; i++) {
        const char *name = tl_model_tensor(m, idx[i])->name;
        char *end;
        if (strncmp(name, "blk.", 4)) continue;
        long b = strtol(name + 4, &end, 10);
        if (end != name + 4 && *end == '.') return b;
    }
    return -1;
}

void tl__llama_place_free(tl__llama_place *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_patterns; i++)
        free(p->patterns[i]);
    free(p->list);
    memset(p, 0, sizeof *p);
}

/* "^blk\.(3|4|5)\." for the blocks of layers [b, e); NULL when none. */
static char *blocks_pattern(const tl_model *m, uint32_t b, uint32_t e) {
    size_t cap = 32 + (size_t)(e - b) * 12, at;
    char *s = malloc(cap);
    if (!s) return NULL;
    at = (size_t)snprintf(s, cap, "^blk\\.(");
    bool any = false;
    for (uint32_t k = b; k < e; k++) {
        long blk = block_of(m, k);
        if (blk < 0) continue;
        at += (size_t)snprintf(s + at, cap - at, "%s%ld", any ? "|" : "", blk);
        any = true;
    }
    snprintf(s + at, cap - at, ")\\.");
    if (!any) {
        free(s);
        return NULL;
    }
    return s;
}

tl_status tl__llama_place_make(const tl_model *m, const struct llama_model_params *params,
                               const tl_llama_options *o, tl__llama_place *out) {
    memset(out, 0, sizeof *out);
    const char *path = tl_model_file(m, 0)->path;
    /* llama.cpp's GPU devices: the caller's list, else every GPU ggml has */
    size_t n_gpu = 0;
    if (params->devices) {
        for (ggml_backend_dev_t *d = params->devices; *d; d++)
            if (is_gpu(*d) && n_gpu < TL_LLAMA_PLAN_MAX_GPUS) out->devs[n_gpu++] = *d;
    } else {
        for (size_t i = 0; i < ggml_backend_dev_count(); i++)
            if (is_gpu(ggml_backend_dev_get(i)) && n_gpu < TL_LLAMA_PLAN_MAX_GPUS)
                out->devs[n_gpu++] = ggml_backend_dev_get(i);
    }
    tl_plan_device pd[TL_LLAMA_PLAN_MAX_GPUS + 1];
    memset(pd, 0, sizeof pd);
    for (size_t i = 0; i < n_gpu; i++) {
        size_t fr = 0, tot = 0;
        ggml_backend_dev_memory(out->devs[i], &fr, &tot);
        snprintf(pd[i].name, sizeof pd[i].name, "%s", ggml_backend_dev_name(out->devs[i]));
        pd[i].is_gpu = true;
        pd[i].total = tot;
        pd[i].free = fr;
    }
    snprintf(pd[n_gpu].name, sizeof pd[n_gpu].name, "cpu");
    pd[n_gpu].is_gpu = false;

    tl_plan_summary s;
    tl_status st = tl_plan_summary_from_model(m, TL_DTYPE_INVALID, &s);
    if (st) return st;
    char reserve[64];
    snprintf(reserve, sizeof reserve, "other=%llu", (unsigned long long)o->reserve);
    tl_plan_options po;
    tl_plan_options_init(&po);
    po.max_vram = o->max_vram;
    po.headroom = o->headroom;
    po.reserve = reserve;
    po.phases = "other";
    tl_plan *plan = NULL;
    st = tl_plan_create(&s, pd, n_gpu + 1, &po, &plan);
    tl_plan_summary_clear(&s);
    if (st) return tl_set_error(st, "%s: plan: %s", path, tl_last_error());
    if (o->plan_text) {
        *o->plan_text = NULL;
        if ((st = tl_plan_to_text(plan, o->plan_text))) {
            tl_plan_destroy(plan);
            return st;
        }
    }
    if (!tl_plan_feasible(plan)) {
        st = tl_set_error(TL_ERR_INFEASIBLE, "%s: plan: %s", path, tl_plan_error(plan));
        tl_plan_destroy(plan);
        return st;
    }
    tl_plan_decision d;
    st = tl_plan_decision_of(plan, TL_COMP_OTHER, &d, sizeof d);
    tl_plan_destroy(plan);
    if (st) return st;

    out->params = *params;
    size_t n_layers = tl_model_layer_count(m, TL_COMP_OTHER);
    if (!d.present || d.mode == TL_PLAN_MODE_CPU || n_gpu == 0) {
        out->params.n_gpu_layers = 0;
        out->applied = true;
        return TL_OK;
    }
    size_t n_user = 0;
    if (params->tensor_buft_overrides)
        while (params->tensor_buft_overrides[n_user].pattern)
            n_user++;
    out->list = calloc(n_user + d.n_devices + 3, sizeof *out->list);
    if (!out->list) return tl_set_error(TL_ERR_NOMEM, "%s: out of memory", path);
    size_t at = 0;
    for (; at < n_user; at++)
        out->list[at] = params->tensor_buft_overrides[at];
    uint32_t on_gpu = 0;
    for (uint32_t i = 0; i < d.n_devices; i++) {
        ggml_backend_dev_t dev = out->devs[d.devices[i]];
        out->order[i] = dev;
        out->split[i] = (float)d.shares[i];
        if (d.mode == TL_PLAN_MODE_ROW_SPLIT) continue;
        out->split[i] = (float)(d.layer_end[i] - d.layer_begin[i]);
        on_gpu += d.layer_end[i] - d.layer_begin[i];
        char *p = blocks_pattern(m, d.layer_begin[i], d.layer_end[i]);
        if (!p) continue;
        out->patterns[out->n_patterns++] = p;
        out->list[at].pattern = p;
        out->list[at++].buft = ggml_backend_dev_buffer_type(dev);
    }
    out->order[d.n_devices] = NULL;
    if (d.mode == TL_PLAN_MODE_ROW_SPLIT) {
        out->params.split_mode = LLAMA_SPLIT_MODE_ROW;
        out->params.n_gpu_layers = -1;
    } else {
        /* the output layer goes with the first GPU; the rest of the blocks stay in RAM */
        out->list[at].pattern = "^output";
        out->list[at++].buft = ggml_backend_dev_buffer_type(out->devs[d.devices[0]]);
        out->list[at].pattern = "^blk\\.";
        out->list[at++].buft = ggml_backend_cpu_buffer_type();
        out->params.split_mode = LLAMA_SPLIT_MODE_LAYER;
        out->params.n_gpu_layers = (int32_t)on_gpu + (on_gpu == n_layers ? 1 : 0);
        /*
         * llama.cpp gives layer il device upper_bound(cumulative split shares,
         * il / (n_layer + 1)): layer counts as shares, the output layer counted
         * with the last device, give each layer the device the plan chose
         * (when every layer is on a GPU; otherwise llama.cpp's last layers).
         */
        if (on_gpu == n_layers) out->split[d.n_devices - 1] += 1.0f;
        out->params.tensor_buft_overrides = out->list;
    }
    out->params.devices = out->order;
    out->params.tensor_split = out->split;
    out->applied = true;
    return TL_OK;
}
