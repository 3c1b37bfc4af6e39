/*
 * engine.c — what an engine's integration with tierload looks like, on ggml:
 * register ggml's devices, open a model, plan it for a ggml device with a
 * budget, create a session, then for each phase acquire the weights (a
 * streamed component layer by layer, the next layer prefetched while this one
 * computes), bind each to a ggml tensor where tierload placed it
 * (tl_session_bind_ggml), compute a ggml graph there on that device's own
 * backend, release; a LoRA-style patch applied between two passes; statistics
 * printed. No weight is copied back to the host: only each product comes back.
 *
 * The "network" is one matrix-vector product per 2-D weight, y = W . x, with
 * ggml_mul_mat; each y is checked against the same product computed from the
 * model's bytes in the file mapping on ggml's CPU backend, so a wrong byte
 * anywhere shows.
 *
 * ggml is loaded at run time (dlopen), as an engine that ships ggml would
 * link it: nothing of ggml is needed to build this file. Only tierload's
 * public header is used.
 *
 *   engine MODEL... --ggml DIR [--device NAME=SIZE] [--rpc HOST:PORT,...]
 *          [--backend SPEC] [--reserve SPEC] [--passes N] [--lora]
 *
 * --device names the ggml device the plan places weights on (default
 * ggml:CPU) and its budget; on ggml:CPU the session is told no_zero_copy, so
 * that the budget holds real copies and a streamed component really moves.
 * --rpc adds the devices of ggml-rpc-server processes (rpc0:0, ...).
 *
 * Exit status 0 when every product matched, 1 otherwise or on error.
 */
#include <tierload.h>

#include <dirent.h>
#include <dlfcn.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the slice of ggml's C API used here (ggml.h, ggml-alloc.h, ggml-backend.h) ---- */

struct ggml_init_params {
    size_t mem_size;
    void *mem_buffer;
    bool no_alloc;
};
#define GGML_TYPE_F32 0
#define GGML_TYPE_F16 1

static struct {
    void *(*init)(struct ggml_init_params);
    void (*free)(void *ctx);
    size_t (*tensor_overhead)(void);
    size_t (*graph_overhead)(void);
    void *(*new_tensor_1d)(void *ctx, int type, int64_t ne0);
    void *(*new_tensor_2d)(void *ctx, int type, int64_t ne0, int64_t ne1);
    void *(*mul_mat)(void *ctx, void *a, void *b);
    void *(*new_graph)(void *ctx);
    void (*build_forward_expand)(void *graph, void *t);
    void *(*alloc_ctx_tensors)(void *ctx, void *backend);
    int (*tensor_alloc)(void *buf, void *t, void *addr);
    void (*tensor_set)(void *t, const void *data, size_t off, size_t n);
    void (*tensor_get)(const void *t, void *data, size_t off, size_t n);
    void (*buffer_free)(void *buf);
    void *(*dev_by_name)(const char *name);
    void *(*dev_init)(void *dev, const char *params);
    void *(*dev_backend_reg)(void *dev);
    void *(*reg_get_proc_address)(void *reg, const char *name);
    int (*graph_compute)(void *backend, void *graph);
    void (*backend_free)(void *backend);
    uint16_t (*fp32_to_fp16)(float);
    float (*fp16_to_fp32)(uint16_t);
} G;

static bool load_ggml(const char *dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s/libggml-base.so", dir);
    void *base = dlopen(p, RTLD_NOW | RTLD_GLOBAL);
    /* libggml.so, or a versioned name (libggml.v0.5.0.so in the npm package) */
    snprintf(p, sizeof p, "%s/libggml.so", dir);
    void *reg = dlopen(p, RTLD_NOW | RTLD_GLOBAL);
    DIR *d = reg ? NULL : opendir(dir);
    for (struct dirent *de; d && !reg && (de = readdir(d));)
        if (!strncmp(de->d_name, "libggml.", 8) && strstr(de->d_name, ".so")) {
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            reg = dlopen(p, RTLD_NOW | RTLD_GLOBAL);
        }
    if (d) closedir(d);
    if (!base || !reg) {
        fprintf(stderr, "engine: %s\n", dlerror());
        return false;
    }
#define SYM(lib, field, name)                                                                      \
    if (!(*(void **)&G.field = dlsym(lib, name))) {                                                \
        fprintf(stderr, "engine: ggml has no %s\n", name);                                         \
        return false;                                                                              \
    }
    SYM(base, init, "ggml_init")
    SYM(base, free, "ggml_free")
    SYM(base, tensor_overhead, "ggml_tensor_overhead")
    SYM(base, graph_overhead, "ggml_graph_overhead")
    SYM(base, new_tensor_1d, "ggml_new_tensor_1d")
    SYM(base, new_tensor_2d, "ggml_new_tensor_2d")
    SYM(base, mul_mat, "ggml_mul_mat")
    SYM(base, new_graph, "ggml_new_graph")
    SYM(base, build_forward_expand, "ggml_build_forward_expand")
    SYM(base, alloc_ctx_tensors, "ggml_backend_alloc_ctx_tensors")
    SYM(base, tensor_alloc, "ggml_backend_tensor_alloc")
    SYM(base, tensor_set, "ggml_backend_tensor_set")
    SYM(base, tensor_get, "ggml_backend_tensor_get")
    SYM(base, buffer_free, "ggml_backend_buffer_free")
    SYM(base, dev_init, "ggml_backend_dev_init")
    SYM(base, dev_backend_reg, "ggml_backend_dev_backend_reg")
    SYM(base, reg_get_proc_address, "ggml_backend_reg_get_proc_address")
    SYM(base, graph_compute, "ggml_backend_graph_compute")
    SYM(base, backend_free, "ggml_backend_free")
    SYM(base, fp32_to_fp16, "ggml_fp32_to_fp16")
    SYM(base, fp16_to_fp32, "ggml_fp16_to_fp32")
    SYM(reg, dev_by_name, "ggml_backend_dev_by_name")
#undef SYM
    return true;
}

/* ---- the engine ---- */

#define MAX_BACKENDS 8

typedef struct engine {
    tl_model *m;
    tl_session *s;
    tl_device *ggml_cpu; /* tierload's view of ggml's CPU device (wraps host memory in place) */
    void *backend;       /* ggml's CPU backend: host tiers, and the reference products */
    struct {
        tl_device *dev; /* a reference of the engine's own */
        void *backend;  /* the engine's ggml backend on that device */
    } be[MAX_BACKENDS];
    int n_be;
    uint64_t products, mismatches;
    double checksum;
} engine;

/* One thread for ggml's CPU backend (its threads spin; one keeps runs quiet). */
static void one_thread(void *dev, void *backend) {
    void (*set_threads)(void *, int) = (void (*)(void *, int))G.reg_get_proc_address(
        G.dev_backend_reg(dev), "ggml_backend_set_n_threads");
    if (set_threads) set_threads(backend, 1);
}

/* The engine's backend on tierload device d (host tiers: the CPU backend); NULL on failure. */
static void *backend_of(engine *e, tl_device *d) {
    if (!d) return e->backend;
    for (int i = 0; i < e->n_be; i++)
        if (!strcmp(tl_device_name(e->be[i].dev), tl_device_name(d))) return e->be[i].backend;
    void *gd = tl_device_ggml_dev(d);
    if (!gd || e->n_be == MAX_BACKENDS) {
        fprintf(stderr, "engine: %s is not a ggml device: nothing to compute on there\n",
                tl_device_name(d));
        return NULL;
    }
    void *b = G.dev_init(gd, NULL);
    if (!b || tl_device_find(tl_device_name(d), &e->be[e->n_be].dev) != TL_OK) return NULL;
    one_thread(gd, b);
    e->be[e->n_be].backend = b;
    e->n_be++;
    return b;
}

/* The fixed input: x[i] = sin(i + 1). */
static void fill_x(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = sinf((float)(i + 1));
}

/*
 * y = W . x on backend, W (cols wide, ggml's ne0) already placed in ctx;
 * x and y get a buffer of the backend's, and only y comes back.
 */
static bool product(void *backend, void *ctx, void *W, int64_t cols, int64_t rows, float *y) {
    void *x = G.new_tensor_1d(ctx, GGML_TYPE_F32, cols);
    void *out = G.mul_mat(ctx, W, x);
    void *xy = G.alloc_ctx_tensors(ctx, backend);
    bool ok = xy != NULL;
    if (ok) {
        float *xv = malloc((size_t)cols * sizeof *xv);
        ok = xv != NULL;
        if (ok) {
            fill_x(xv, cols);
            G.tensor_set(x, xv, 0, (size_t)cols * sizeof *xv);
            free(xv);
            void *graph = G.new_graph(ctx);
            G.build_forward_expand(graph, out);
            ok = G.graph_compute(backend, graph) == 0;
        }
        if (ok) G.tensor_get(out, y, 0, (size_t)rows * sizeof *y);
        G.buffer_free(xy);
    }
    return ok;
}

static void *graph_ctx(void) {
    struct ggml_init_params ip = {G.tensor_overhead() * 8 + G.graph_overhead(), NULL, true};
    return G.init(ip);
}

/* The reference: y = W . x on ggml's CPU backend, W the file's bytes wrapped without a copy. */
static bool reference(engine *e, const void *w, const tl_tensor_info *t, float *y) {
    int64_t cols = (int64_t)t->shape[1], rows = (int64_t)t->shape[0];
    tl_ggml_host_buffer hb;
    if (tl_ggml_host_buffer_create(e->ggml_cpu, w, t->nbytes, &hb) != TL_OK) return false;
    void *ctx = graph_ctx();
    void *W = ctx ? G.new_tensor_2d(ctx, (int)t->dtype, cols, rows) : NULL;
    bool ok = W && G.tensor_alloc(hb.buffer, W, (char *)hb.base + hb.offset) == 0 &&
              product(e->backend, ctx, W, cols, rows, y);
    if (ctx) G.free(ctx);
    tl_ggml_host_buffer_destroy(&hb);
    return ok;
}

/*
 * y = W . x where the session placed tensor i of set a: bound to a ggml
 * tensor (device memory on a ggml device, the host bytes wrapped in place on
 * host tiers) and computed on the backend of that device.
 */
static bool placed(engine *e, const tl_acquired *a, size_t i, float *y) {
    const tl_session_tensor *t = tl_acquired_tensor(a, i);
    const tl_tensor_info *ti = t->info;
    void *backend = backend_of(e, t->parts[0].device);
    void *ctx = backend ? graph_ctx() : NULL;
    void *W = ctx ? G.new_tensor_2d(ctx, (int)ti->dtype, ti->shape[1], ti->shape[0]) : NULL;
    tl_status st = W ? tl_session_bind_ggml(e->s, a, i, W) : TL_ERR_NOMEM;
    if (st) fprintf(stderr, "engine: bind %s: %s\n", ti->name, tl_last_error());
    bool ok = !st && product(backend, ctx, W, ti->shape[1], ti->shape[0], y);
    if (ctx) G.free(ctx);
    return ok;
}

/* The weight types this engine multiplies (ggml aborts on a weight type it has no kernel for). */
static bool multiplies(const tl_tensor_info *t) {
    switch ((int)t->dtype) {
    case TL_DTYPE_F32:
    case TL_DTYPE_F16:
    case TL_DTYPE_BF16:
    case TL_DTYPE_Q4_0:
    case TL_DTYPE_Q4_1:
    case TL_DTYPE_Q5_0:
    case TL_DTYPE_Q5_1:
    case TL_DTYPE_Q8_0:
    case TL_DTYPE_Q2_K:
    case TL_DTYPE_Q3_K:
    case TL_DTYPE_Q4_K:
    case TL_DTYPE_Q5_K:
    case TL_DTYPE_Q6_K:
        return t->n_dims == 2 && t->shape[0] > 0 &&
               t->shape[1] % tl_dtype_block_elems(t->dtype) == 0;
    default:
        return false;
    }
}

/*
 * Compute on one acquired set: every 2-D weight ggml multiplies, where it
 * lies, checked against the product of the file's bytes (equal to within
 * 1e-3 of the largest |y|; bit for bit on CPU backends).
 */
static bool compute(engine *e, const tl_acquired *a) {
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *t = tl_acquired_tensor(a, i);
        const tl_tensor_info *ti = t->info;
        if (!multiplies(ti)) continue;
        if (t->n_parts != 1) {
            fprintf(stderr, "engine: %s is split by rows; this engine computes whole tensors\n",
                    ti->name);
            return false;
        }
        size_t rows = (size_t)ti->shape[0];
        float *ref = malloc(rows * sizeof *ref), *y = malloc(rows * sizeof *y);
        bool ok = ref && y && reference(e, tl_model_tensor_data(e->m, t->index), ti, ref) &&
                  placed(e, a, i, y);
        if (ok) {
            /* rows whose weights hold NaN give NaN both ways */
            float top = 0, worst = 0;
            for (size_t r = 0; r < rows; r++) {
                if (isfinite(ref[r]) && fabsf(ref[r]) > top) top = fabsf(ref[r]);
                if (isfinite(y[r])) e->checksum += y[r];
                if (isnan(y[r]) != isnan(ref[r])) worst = INFINITY;
                else if (!isnan(y[r]) && fabsf(y[r] - ref[r]) > worst) worst = fabsf(y[r] - ref[r]);
            }
            e->products++;
            if (worst > 1e-3f * top) e->mismatches++;
        }
        free(ref);
        free(y);
        if (!ok) return false;
    }
    return true;
}

/* Run component c once: whole, or layer by layer with the next one prefetched. */
static tl_status run_component(engine *e, tl_component c, bool streamed) {
    tl_acquired *a = NULL;
    tl_status s;
    if (!streamed) {
        if ((s = tl_session_acquire(e->s, c, 0, TL_ALL_LAYERS, true, &a))) return s;
        bool ok = compute(e, a);
        tl_session_release(e->s, a);
        return ok ? TL_OK : TL_ERR_DEVICE;
    }
    tl_acquired *other = NULL;
    if ((s = tl_session_acquire(e->s, c, 0, 0, true, &other))) return s;
    bool ok = compute(e, other);
    size_t nl = tl_model_layer_count(e->m, c);
    for (size_t k = 0; k < nl && ok && !s; k++) {
        if (k + 1 < nl) s = tl_session_prefetch(e->s, c, k + 1, k + 2, false);
        if (!s) s = tl_session_acquire(e->s, c, k, k + 1, false, &a);
        if (!s) {
            ok = compute(e, a);
            tl_session_release(e->s, a);
        }
    }
    tl_session_release(e->s, other);
    return s ? s : ok ? TL_OK : TL_ERR_DEVICE;
}

/* A rank-1 "LoRA" on the first F32/F16 2-D weight: W += 0.01 * u v^T, in the mapping. */
static size_t apply_lora(engine *e) {
    for (size_t i = 0; i < tl_model_tensor_count(e->m); i++) {
        const tl_tensor_info *t = tl_model_tensor(e->m, i);
        if (t->n_dims != 2 || (t->dtype != TL_DTYPE_F32 && t->dtype != TL_DTYPE_F16)) continue;
        unsigned char *w = tl_model_tensor_data_mut(e->m, i);
        if (!w) return TL_NOT_FOUND;
        for (int64_t r = 0; r < t->shape[0]; r++)
            for (int64_t c = 0; c < t->shape[1]; c++) {
                float d = 0.01f * cosf((float)r) * sinf((float)c);
                int64_t k = r * t->shape[1] + c;
                if (t->dtype == TL_DTYPE_F32) {
                    ((float *)w)[k] += d;
                } else {
                    uint16_t *h = (uint16_t *)w + k;
                    *h = G.fp32_to_fp16(G.fp16_to_fp32(*h) + d);
                }
            }
        tl_session_refresh(e->s,
                           i); /* the session drops its copies: the next acquire loads these */
        return i;
    }
    return TL_NOT_FOUND;
}

#define USAGE                                                                                      \
    "usage: engine MODEL... --ggml DIR [--device NAME=SIZE] [--rpc HOST:PORT,...] "                \
    "[--backend SPEC] [--reserve SPEC] [--passes N] [--lora]\n"

static int fail(const char *what, tl_status s) {
    fprintf(stderr, "engine: %s: %s: %s\n", what, tl_status_name(s), tl_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *paths[16], *dir = getenv("TIERLOAD_GGML_DIR"), *device = "ggml:CPU",
                           *rpc = NULL, *backend = NULL, *reserve = NULL;
    size_t n_paths = 0;
    int passes = 2;
    bool lora = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ggml") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--device") && i + 1 < argc)
            device = argv[++i];
        else if (!strcmp(argv[i], "--rpc") && i + 1 < argc)
            rpc = argv[++i];
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc)
            backend = argv[++i];
        else if (!strcmp(argv[i], "--reserve") && i + 1 < argc)
            reserve = argv[++i];
        else if (!strcmp(argv[i], "--passes") && i + 1 < argc)
            passes = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--lora"))
            lora = true;
        else if (n_paths < 16 && argv[i][0] != '-')
            paths[n_paths++] = argv[i];
        else {
            fprintf(stderr, USAGE);
            return 2;
        }
    }
    if (!n_paths || !dir || passes < 1) {
        fprintf(stderr, USAGE);
        return 2;
    }
    engine e = {0};
    tl_status s;

    /* 1. The model: one catalog over its files, nothing read but headers. */
    tl_model_options mo;
    tl_model_options_init(&mo);
    mo.writable = lora; /* copy-on-write mapping: a patch stays in this process */
    if ((s = tl_model_open(paths, n_paths, &mo, &e.m))) return fail("open", s);

    /* 2. The machine: ggml's devices registered first, so that the plan can place weights on
          them; the one named by --device gets the budget given there. */
    if ((s = tl_device_ggml_discover(dir, NULL))) return fail("ggml", s);
    if (rpc && (s = tl_device_ggml_rpc_add(rpc, NULL))) return fail("--rpc", s);
    if ((s = tl_device_find("ggml:CPU", &e.ggml_cpu))) return fail("ggml:CPU", s);
    if (!load_ggml(dir)) return 1;
    void *dev = G.dev_by_name("CPU");
    e.backend = dev ? G.dev_init(dev, NULL) : NULL;
    if (!e.backend) return fail("ggml CPU backend", TL_ERR_DEVICE);
    one_thread(dev, e.backend);
    tl_plan_device devs[2];
    memset(devs, 0, sizeof devs);
    const char *eq = strchr(device, '=');
    snprintf(devs[0].name, sizeof devs[0].name, "%.*s",
             (int)(eq ? (size_t)(eq - device) : strlen(device)), device);
    tl_device *named = NULL;
    tl_device_info info;
    if ((s = tl_device_find(devs[0].name, &named)) || (s = tl_device_describe(named, &info, sizeof info)))
        return fail(devs[0].name, s);
    snprintf(devs[0].name, sizeof devs[0].name, "%s", tl_device_name(named));
    tl_device_release(named);
    devs[0].is_gpu = true;
    devs[0].total = devs[0].free = info.total;
    if (eq && (s = tl_parse_bytes(eq + 1, &devs[0].total, NULL))) return fail("--device", s);
    devs[0].free = devs[0].total;
    snprintf(devs[1].name, sizeof devs[1].name, "cpu");
    size_t n_devs = 2;

    tl_plan_summary sum;
    tl_plan *plan = NULL;
    tl_plan_options po;
    tl_plan_options_init(&po);
    po.backend =
        backend; /* "diffusion=eg,vae=cpu": what --backend / -ot say in sd.cpp, llama.cpp */
    po.reserve = reserve; /* compute buffers per component ("diffusion=0,cond=0,vae=0") */
    if ((s = tl_plan_summary_from_model(e.m, TL_DTYPE_INVALID, &sum))) return fail("summary", s);
    s = tl_plan_create(&sum, devs, n_devs, &po, &plan);
    tl_plan_summary_clear(&sum);
    if (s) return fail("plan", s);
    if (!tl_plan_feasible(plan)) {
        fprintf(stderr, "engine: the model does not fit: %s\n", tl_plan_error(plan));
        return 1;
    }

    /* 3. The session: weights load where the plan says when first acquired. */
    tl_session_options so;
    tl_session_options_init(&so);
    so.no_zero_copy = true; /* ggml:CPU too holds copies under its budget: streaming moves bytes */
    if ((s = tl_session_create(e.m, plan, &so, &e.s))) return fail("session", s);

    /* 4. The phases, passes times; a LoRA patched in after the first pass. */
    size_t lora_tensor = TL_NOT_FOUND;
    for (int pass = 0; pass < passes && !s; pass++) {
        if (lora && pass == 1) {
            lora_tensor = apply_lora(&e);
            if (lora_tensor != TL_NOT_FOUND)
                printf("lora: patched %s\n", tl_model_tensor(e.m, lora_tensor)->name);
        }
        /* the plan's phases, then the weights kept for the whole run (an LLM's: component other) */
        uint32_t seen = 0;
        for (size_t ph = 0; ph <= tl_plan_phase_count(plan) && !s; ph++) {
            uint32_t mask = ph < tl_plan_phase_count(plan) ? tl_plan_phase_mask(plan, ph)
                                                           : ~seen & (1u << TL_COMP_OTHER);
            seen |= mask;
            for (int c = 0; c < TL_COMP_COUNT && !s; c++) {
                tl_plan_decision d;
                if (!(mask & (1u << c)) ||
                    tl_plan_decision_of(plan, (tl_component)c, &d, sizeof d) != TL_OK || !d.present)
                    continue;
                bool streamed = d.mode == TL_PLAN_MODE_STREAM;
                s = run_component(&e, (tl_component)c, streamed);
                if (!s)
                    printf("pass %d: %s %s\n", pass + 1, tl_component_name((tl_component)c),
                           streamed      ? "streamed layer by layer"
                           : d.n_devices ? "on its GPU"
                                         : "on the host");
            }
        }
    }
    if (s) return fail("run", s);

    /* 5. What it cost. */
    tl_session_stats st;
    tl_session_stats_get(e.s, &st, sizeof st);
    printf("products %llu, mismatches %llu, checksum %.6g\n", (unsigned long long)e.products,
           (unsigned long long)e.mismatches, e.checksum);
    printf("bytes moved %llu (loads %llu, evictions %llu, prefetch hits %llu)\n",
           (unsigned long long)st.bytes_moved, (unsigned long long)st.loads,
           (unsigned long long)st.evictions, (unsigned long long)st.prefetch_hits);
    for (size_t i = 0; i < st.n_devices; i++)
        printf("device %s: peak %llu of budget %llu\n", st.devices[i].name,
               (unsigned long long)st.devices[i].peak, (unsigned long long)st.devices[i].budget);

    if (lora_tensor != TL_NOT_FOUND) tl_model_tensor_unpatch(e.m, lora_tensor);
    tl_session_destroy(e.s);
    tl_plan_destroy(plan);
    for (int i = 0; i < e.n_be; i++) {
        G.backend_free(e.be[i].backend);
        tl_device_release(e.be[i].dev);
    }
    G.backend_free(e.backend);
    tl_device_release(e.ggml_cpu);
    tl_model_close(e.m);
    return e.mismatches ? 1 : 0;
}
