/*
 * tl_llama.c — `tl-llama`: a llama-architecture forward pass on ggml whose
 * weights come from a tierload session, layer by layer, bound into the
 * engine's ggml tensors where tierload placed them, with the next layer
 * prefetched while this one computes. It is the proof that an engine computes
 * on weights tierload moves: its logits are held against llama.cpp's own
 * (tests/tools/llama_oracle.c) on the same GGUF and tokens.
 *
 *   tl-llama MODEL.gguf --tokens 1,2,3,... --n-predict N --logits OUT.f32
 *            [--device NAME] [--budget SIZE] [--rpc HOST:PORT,...]
 *            [--split-devices A,B] [--split-mode layer|row] [--threads N]
 *            [--ggml-dir DIR] [--json] [--measure-link]
 *
 * The network is llama.cpp's graph for the llama architecture, op for op:
 * token embedding (get_rows), per block RMSNorm x attn_norm, Q/K/V
 * projections, RoPE (mode 0, llama's), grouped-query attention over a KV
 * cache in F16 of 256-row steps (K·Q, soft_max with the causal mask and
 * 1/sqrt(head_dim), V transposed times the probabilities), the output projection and residual,
 * RMSNorm x ffn_norm, SwiGLU (silu(gate) * up, then down) and residual; then
 * RMSNorm x output_norm and the output head. It evaluates the prompt as one
 * batch, then greedy-decodes N tokens, evaluating each; OUT.f32 gets the
 * logits of every evaluated position (positions x vocab, little-endian F32).
 *
 * Where weights live: the plan puts the model (component "other") on the
 * device named (default ggml:CPU), whole when it fits --budget, else streamed
 * through it; --split-devices splits its layers over two devices. Each ggml
 * device tierload knows (ggml:CPU, rpcN:DEV of --rpc servers) gets a ggml
 * backend of its own here, and each graph runs on the backend of the device
 * that holds its weights. Streamed, a graph is one layer, because a layer's
 * weights are bound only while that layer is acquired, and the binding is
 * what the graph reads; kept whole, the weights are loaded as one batch
 * before the first token and the layers that follow one another on a device
 * are acquired together and computed as one graph (an RPC server is then
 * asked once per device per token, not once per layer). The hidden state
 * crosses between graphs through host memory (n_tokens x n_embd floats);
 * each layer's KV cache lives on its device.
 *
 * --split-mode row (with --split-devices, weights kept whole, no --budget)
 * makes every device compute on every block, at once, instead of one after
 * the other: the plan cuts each matrix by rows over the devices (row_split)
 * and keeps the norms and the token embedding on the host. A block is then
 * four rounds of matrix products, each device computing its rows of them
 * (Q, K and V; the output projection; gate and up with SwiGLU, whose rows
 * stay on the device for down; down), with the host joining the rows and
 * doing what lies between: RMSNorm, RoPE, the KV cache and attention, the
 * residuals. A row is the same dot product on any device, and the plan cuts
 * matrices where ggml's CPU product computes a part's rows as the whole's:
 * the logits are the layer split's, bit for bit. It pays where the devices'
 * compute is the limit (RPC servers with a core each) and a round trip is
 * cheap beside a block's products.
 *
 * With --rpc, a server lost in the middle of the run (gone, or silent past
 * TIERLOAD_RPC_TIMEOUT) ends only the try in a child process: the run starts
 * again without it, the weights placed on the servers that remain (or
 * ggml:CPU) and loaded from the file, and ends with the tokens of a run that
 * lost nothing (see supervise).
 *
 * Exit status: 0 on success, 2 on bad usage, 9 when ggml gave up on a device
 * that is not an RPC server's (ggml's abort, reported with what tierload was
 * moving where), 1 on any other error.
 */
#include <ggml-alloc.h>
#include <ggml-backend.h>
#include <ggml.h>
#include <tierload.h>

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef TL_LLAMA_GGML_DIR
#define TL_LLAMA_GGML_DIR NULL
#endif

#define MAX_SLOTS 8
#define MAX_HELD 4 /* row ranges of the FFN's hidden state one device computes */

typedef struct hparams {
    int64_t n_embd, n_layer, n_ff, n_head, n_head_kv, n_rot, n_vocab, n_ctx_train;
    float eps, freq_base;
} hparams;

/* One compute device: tierload's device and the ggml backend computing there. */
typedef struct slot {
    tl_device *dev; /* NULL: host tiers (computed on ggml's CPU backend) */
    char desc[TL_DEVICE_DESC_MAX]; /* the device's description (an RPC server's names it) */
    ggml_backend_t be;
    ggml_gallocr_t ga;
    bool is_cpu;
    /* row split: the FFN's hidden state kept here between its two rounds, and the rows of it
       this device computed (the others come from the host) */
    struct ggml_context *h_ctx;
    ggml_backend_buffer_t h_buf;
    struct ggml_tensor *h; /* [n_ff, tokens] F32 */
    int n_held;
    int64_t held[MAX_HELD][2];
} slot;

/* Per block: the device its weights live on, and its KV cache there. */
typedef struct layer_state {
    int slot;
    struct ggml_context *kv_ctx;
    ggml_backend_buffer_t kv_buf;
    struct ggml_tensor *k, *v; /* [n_embd_kv, n_ctx] F16 each */
} layer_state;

typedef struct engine {
    tl_model *m;
    tl_plan *plan;
    tl_session *s;
    hparams hp;
    int threads, n_ctx;
    slot slots[MAX_SLOTS];
    int n_slots;
    layer_state *layers;
    double wait_s, compute_s; /* time in acquire (waiting for weights) and in graph compute */
    double *layer_wait, *layer_compute;
    uint64_t kv_bytes;
    bool chain;          /* weights kept whole: runs of blocks on one device as one graph */
    bool row;            /* matrices split by rows over the devices (block_rows) */
    tl_acquired **held;  /* the blocks of the run being computed */
} engine;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ggml is about to abort (e.g. an RPC server died mid-transfer): say where, end with status 9. */
static int g_lost_fd = -1; /* in a supervised try: where the abort message goes too */
/*
 * The description of the device the engine works on now (its graph's inputs,
 * compute and outputs): ggml's RPC client may abort on its own thread, and
 * tierload's message names only tierload's own copies in flight, so a server
 * lost while the engine talks to it is named from here.
 */
static const char *_Atomic g_working_on;

static void say(const char *a, const char *b, const char *c) {
    if (write(2, a, strlen(a)) < 0 || write(2, b, strlen(b)) < 0 || write(2, c, strlen(c)) < 0) {
    }
    if (g_lost_fd >= 0 &&
        (write(g_lost_fd, b, strlen(b)) < 0 || write(g_lost_fd, c, strlen(c)) < 0)) {
    }
}

static void on_ggml_abort(const char *message) {
    const char *on = atomic_load(&g_working_on);
    say("tl-llama: ggml gave up: ", message, "");
    if (on && !strstr(message, "ggml RPC server ")) say(" (working on ", on, ")");
    say("", "", "\n");
    _exit(9);
}

static int fail(const char *what, tl_status s) {
    fprintf(stderr, "tl-llama: %s: %s: %s\n", what, tl_status_name(s), tl_last_error());
    return 1;
}

/* ---- weights: tierload's acquired tensors bound into ggml tensors ---- */

/* The ggml device of tierload device d (host tiers: ggml's CPU device); NULL for non-ggml ones. */
static ggml_backend_dev_t ggml_dev_of(tl_device *d) {
    if (!d) return ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    return (ggml_backend_dev_t)tl_device_ggml_dev(d);
}

/* The slot computing on tierload device d (created on first use). -1 on failure. */
static int slot_of(engine *e, tl_device *d) {
    for (int i = 0; i < e->n_slots; i++)
        if (e->slots[i].dev == d || (d && e->slots[i].dev &&
                                     !strcmp(tl_device_name(e->slots[i].dev), tl_device_name(d))))
            return i;
    ggml_backend_dev_t gd = ggml_dev_of(d);
    if (!gd || e->n_slots == MAX_SLOTS) {
        fprintf(stderr, "tl-llama: device %s: no ggml device to compute on\n",
                d ? tl_device_name(d) : "host");
        return -1;
    }
    slot *s = &e->slots[e->n_slots];
    /* a reference of the engine's own: the session's parts only borrow theirs */
    if (d && tl_device_find(tl_device_name(d), &s->dev) != TL_OK) return -1;
    tl_device_info di;
    snprintf(s->desc, sizeof s->desc, "%s",
             d && tl_device_describe(d, &di, sizeof di) == TL_OK ? di.desc : "host");
    s->be = ggml_backend_dev_init(gd, NULL);
    if (!s->be) return -1;
    s->is_cpu = ggml_backend_dev_type(gd) == GGML_BACKEND_DEVICE_TYPE_CPU;
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(gd);
    ggml_backend_set_n_threads_t set_threads =
        reg ? (ggml_backend_set_n_threads_t)ggml_backend_reg_get_proc_address(
                  reg, "ggml_backend_set_n_threads")
            : NULL;
    if (set_threads) set_threads(s->be, e->threads);
    s->ga = ggml_gallocr_new(ggml_backend_get_default_buffer_type(s->be));
    if (!s->ga) return -1;
    return e->n_slots++;
}

/* The device of acquired set a's first tensor (NULL: host tiers). */
static tl_device *set_device(const tl_acquired *a) {
    const tl_session_tensor *t = tl_acquired_count(a) ? tl_acquired_tensor(a, 0) : NULL;
    return t && t->n_parts ? t->parts[0].device : NULL;
}

/* The device that holds acquired set a (all its tensors on one device, as the plan places). */
static int slot_of_set(engine *e, const tl_acquired *a) {
    tl_device *d = set_device(a);
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *t = tl_acquired_tensor(a, i);
        if (t->n_parts != 1) {
            fprintf(stderr, "tl-llama: %s: split by rows; this engine computes whole tensors\n",
                    t->info->name);
            return -1;
        }
        if (t->parts[0].device != d) {
            fprintf(stderr, "tl-llama: %s: on another device than its layer\n", t->info->name);
            return -1;
        }
    }
    int si = slot_of(e, d);
    if (si >= 0) atomic_store(&g_working_on, e->slots[si].desc); /* until the next set's */
    return si;
}

/* The index in set a of the weight "SUFFIX" (full name, or the name after "blk.N."); -1 if none. */
static int find_tensor(const tl_acquired *a, const char *suffix) {
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *t = tl_acquired_tensor(a, i);
        const char *n = t->info->name;
        if (t->info->layer >= 0) n += t->info->layer_key_len + (n[t->info->layer_key_len] == '.');
        if (!strcmp(n, suffix)) return (int)i;
    }
    return -1;
}

/* The slot of weight "SUFFIX" of set a, kept whole (one part); -1 if not. */
static int slot_of_tensor(engine *e, const tl_acquired *a, const char *suffix) {
    int i = find_tensor(a, suffix);
    if (i < 0) return -1;
    const tl_session_tensor *t = tl_acquired_tensor(a, (size_t)i);
    if (t->n_parts != 1) {
        fprintf(stderr, "tl-llama: %s: split by rows; this step computes whole tensors\n",
                t->info->name);
        return -1;
    }
    int si = slot_of(e, t->parts[0].device);
    if (si >= 0) atomic_store(&g_working_on, e->slots[si].desc);
    return si;
}

/* A ggml tensor shaped like catalog entry i of a (ggml's ne = the shape reversed). */
static struct ggml_tensor *weight_tensor(struct ggml_context *ctx, const tl_session_tensor *t) {
    int64_t ne[4] = {1, 1, 1, 1};
    for (uint32_t k = 0; k < t->info->n_dims; k++)
        ne[k] = t->info->shape[t->info->n_dims - 1 - k];
    return ggml_new_tensor(ctx, (enum ggml_type)t->info->dtype, (int)t->info->n_dims, ne);
}

/*
 * The weight "SUFFIX" of set a (full name, or the name after "blk.N."), made
 * in ctx and bound to the bytes tierload placed; NULL when absent (or, with
 * *st set, when it cannot be bound).
 */
static struct ggml_tensor *take(engine *e, struct ggml_context *ctx, const tl_acquired *a,
                                const char *suffix, tl_status *st) {
    int i = find_tensor(a, suffix);
    if (i < 0) return NULL;
    const tl_session_tensor *t = tl_acquired_tensor(a, (size_t)i);
    struct ggml_tensor *g = weight_tensor(ctx, t);
    tl_status s = g ? tl_session_bind_ggml(e->s, a, (size_t)i, g) : TL_ERR_NOMEM;
    if (s) {
        fprintf(stderr, "tl-llama: bind %s: %s\n", t->info->name, tl_last_error());
        *st = s;
        return NULL;
    }
    return g;
}

/* ---- graphs ---- */

static struct ggml_context *graph_ctx(void) {
    struct ggml_init_params ip = {ggml_tensor_overhead() * 256 + ggml_graph_overhead(), NULL, true};
    return ggml_init(ip);
}

/* Allocate graph gf's intermediates in slot s's compute buffer. */
static bool run_graph(engine *e, slot *s, struct ggml_cgraph *gf) {
    (void)e;
    return ggml_gallocr_alloc_graph(s->ga, gf);
}

/* Compute gf on slot s (its inputs set); the time is added to the totals and to *acc. */
static bool compute(engine *e, slot *s, struct ggml_cgraph *gf, double *acc) {
    double t0 = now();
    bool ok = ggml_backend_graph_compute(s->be, gf) == GGML_STATUS_SUCCESS;
    ggml_backend_synchronize(s->be); /* RPC returns before the server has computed */
    double dt = now() - t0;
    e->compute_s += dt;
    if (acc) *acc += dt;
    return ok;
}

/*
 * Graph gf's output out computed on slot si: out marked and added to gf, the
 * intermediates allocated, inputs in[0 .. n_in) set from host arrays src[],
 * computed (the time added to *acc), out read into dst.
 */
static bool graph_io(engine *e, int si, struct ggml_cgraph *gf, struct ggml_tensor *out,
                     struct ggml_tensor *const *in, const void *const *src, int n_in, void *dst,
                     double *acc) {
    slot *s = &e->slots[si];
    ggml_set_output(out);
    ggml_build_forward_expand(gf, out);
    bool ok = run_graph(e, s, gf);
    for (int i = 0; i < n_in && ok; i++)
        ggml_backend_tensor_set(in[i], src[i], 0, ggml_nbytes(in[i]));
    if (ok) ok = compute(e, s, gf, acc);
    if (ok) ggml_backend_tensor_get(out, dst, 0, ggml_nbytes(out));
    return ok;
}

/* x (host, n_embd x n floats) = token_embd rows of tok. */
static bool embed(engine *e, const tl_acquired *other, const int32_t *tok, int n, float *x) {
    tl_status st = TL_OK;
    struct ggml_context *ctx = graph_ctx();
    struct ggml_tensor *w = ctx ? take(e, ctx, other, "token_embd.weight", &st) : NULL;
    int si = w ? slot_of_tensor(e, other, "token_embd.weight") : -1;
    bool ok = w && si >= 0;
    if (ok) {
        struct ggml_tensor *ids = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n);
        ggml_set_input(ids);
        const void *src[] = {tok};
        ok = graph_io(e, si, ggml_new_graph(ctx), ggml_get_rows(ctx, w, ids), &ids, src, 1, x,
                      NULL);
    }
    if (st) fprintf(stderr, "tl-llama: token_embd: %s\n", tl_status_name(st));
    if (ctx) ggml_free(ctx);
    return ok;
}

/* The KV cache of layer l on its slot (made on first use). */
static bool kv_cache(engine *e, int l) {
    layer_state *L = &e->layers[l];
    if (L->kv_buf) return true;
    int64_t n_kv = e->hp.n_embd / e->hp.n_head * e->hp.n_head_kv;
    struct ggml_init_params ip = {ggml_tensor_overhead() * 2, NULL, true};
    L->kv_ctx = ggml_init(ip);
    if (!L->kv_ctx) return false;
    L->k = ggml_new_tensor_2d(L->kv_ctx, GGML_TYPE_F16, n_kv, e->n_ctx);
    L->v = ggml_new_tensor_2d(L->kv_ctx, GGML_TYPE_F16, e->n_ctx, n_kv); /* transposed */
    L->kv_buf = ggml_backend_alloc_ctx_tensors(L->kv_ctx, e->slots[L->slot].be);
    if (!L->kv_buf) return false;
    ggml_backend_buffer_clear(L->kv_buf, 0);
    e->kv_bytes += ggml_backend_buffer_get_size(L->kv_buf);
    return true;
}

/*
 * Rows of the cache read by tokens at pos0 .. pos0 + n - 1: whole 256-row
 * steps, as llama.cpp reads its cache. The rows past pos0 + n are masked
 * (probability 0 against zero V), and the dot products have the same length,
 * so the same summation order.
 */
static int kv_rows(const engine *e, int pos0, int n) {
    int64_t r = ((int64_t)pos0 + n + 255) / 256 * 256;
    return (int)(r < e->n_ctx ? r : e->n_ctx);
}

/* A batch's positions and causal mask over n_kv cache rows (malloc'd; false without memory). */
static bool batch_inputs(int pos0, int n, int n_kv, int32_t **pos, float **mask) {
    int32_t *p = malloc((size_t)n * sizeof *p);
    float *mk = malloc((size_t)n * (size_t)n_kv * sizeof *mk);
    *pos = p;
    *mask = mk;
    if (!p || !mk) return false;
    for (int i = 0; i < n; i++) {
        p[i] = pos0 + i;
        for (int j = 0; j < n_kv; j++)
            mk[(size_t)i * (size_t)n_kv + (size_t)j] = j <= pos0 + i ? 0.0f : -INFINITY;
    }
    return true;
}

/*
 * Attention of one block added to gf: q [hd, n_head, n] and k [hd, n_head_kv,
 * n] before RoPE, v [n_kv_embd, n]; this batch's K and V stored in L's cache
 * (rows / columns pos0 ..), then attention over its first n_kv rows. Returns
 * the heads' outputs as [n_embd, n], the input of the output projection.
 */
static struct ggml_tensor *attention(engine *e, struct ggml_context *ctx, struct ggml_cgraph *gf,
                                     layer_state *L, struct ggml_tensor *q, struct ggml_tensor *k,
                                     struct ggml_tensor *v, struct ggml_tensor *pos,
                                     struct ggml_tensor *mask, int pos0, int n, int n_kv) {
    const hparams *hp = &e->hp;
    const int64_t hd = hp->n_embd / hp->n_head, n_kv_embd = hd * hp->n_head_kv;
    q = ggml_rope_ext(ctx, q, pos, NULL, (int)hp->n_rot, 0, (int)hp->n_ctx_train, hp->freq_base,
                      1.0f, 0.0f, 1.0f, 32.0f, 1.0f);
    k = ggml_rope_ext(ctx, k, pos, NULL, (int)hp->n_rot, 0, (int)hp->n_ctx_train, hp->freq_base,
                      1.0f, 0.0f, 1.0f, 32.0f, 1.0f);
    /* store this batch's K at rows pos0.. of the cache, and V at columns pos0.. of its
       transposed cache (converted to F16), as llama.cpp keeps them without flash attention */
    struct ggml_tensor *k_dst =
        ggml_view_2d(ctx, L->k, n_kv_embd, n, L->k->nb[1], (size_t)pos0 * L->k->nb[1]);
    struct ggml_tensor *v_dst =
        ggml_view_2d(ctx, L->v, n, n_kv_embd, L->v->nb[1], (size_t)pos0 * L->v->nb[0]);
    struct ggml_tensor *k_st = ggml_cpy(ctx, ggml_reshape_2d(ctx, k, n_kv_embd, n), k_dst);
    struct ggml_tensor *v_st = ggml_cpy(ctx, ggml_transpose(ctx, v), v_dst);
    ggml_build_forward_expand(gf, k_st);
    ggml_build_forward_expand(gf, v_st);
    /* attention over rows 0 .. n_kv - 1 */
    struct ggml_tensor *kc =
        ggml_view_3d(ctx, L->k, hd, hp->n_head_kv, n_kv, L->k->nb[0] * hd, L->k->nb[1], 0);
    struct ggml_tensor *vt = ggml_view_3d(ctx, L->v, n_kv, hd, hp->n_head_kv, L->v->nb[1],
                                          L->v->nb[1] * hd, 0); /* [n_kv, hd, h]: no copy */
    struct ggml_tensor *qp = ggml_permute(ctx, q, 0, 2, 1, 3);  /* [hd, n, n_head] */
    struct ggml_tensor *kp = ggml_permute(ctx, kc, 0, 2, 1, 3); /* [hd, n_kv, n_head_kv] */
    struct ggml_tensor *kq = ggml_mul_mat(ctx, kp, qp);         /* [n_kv, n, n_head] */
    kq = ggml_soft_max_ext(ctx, kq, mask, 1.0f / sqrtf((float)hd), 0.0f);
    struct ggml_tensor *kqv = ggml_mul_mat(ctx, vt, kq); /* [hd, n, h] */
    return ggml_cont_2d(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3), hp->n_embd, n);
}

/*
 * Block l's nodes added to gf: its input inp ([n_embd, n]: tokens at positions
 * pos0 .. pos0 + n - 1, attending to the cache up to pos0 + n, n_kv rows read),
 * its weights from set a; returns its output, NULL on failure (said). *si: the
 * slot it computes on.
 */
static struct ggml_tensor *block_nodes(engine *e, struct ggml_context *ctx, struct ggml_cgraph *gf,
                                       int l, const tl_acquired *a, struct ggml_tensor *inp,
                                       struct ggml_tensor *pos, struct ggml_tensor *mask, int pos0,
                                       int n, int n_kv, int *si) {
    const hparams *hp = &e->hp;
    tl_status st = TL_OK;
    struct ggml_tensor *attn_norm = take(e, ctx, a, "attn_norm.weight", &st),
                       *wq = take(e, ctx, a, "attn_q.weight", &st),
                       *wk = take(e, ctx, a, "attn_k.weight", &st),
                       *wv = take(e, ctx, a, "attn_v.weight", &st),
                       *wo = take(e, ctx, a, "attn_output.weight", &st),
                       *ffn_norm = take(e, ctx, a, "ffn_norm.weight", &st),
                       *gate = take(e, ctx, a, "ffn_gate.weight", &st),
                       *down = take(e, ctx, a, "ffn_down.weight", &st),
                       *up = take(e, ctx, a, "ffn_up.weight", &st);
    if (st || !attn_norm || !wq || !wk || !wv || !wo || !ffn_norm || !gate || !down || !up) {
        fprintf(stderr, "tl-llama: block %d: weights missing or not bound (%s)\n", l,
                tl_status_name(st));
        return NULL;
    }
    layer_state *L = &e->layers[l];
    *si = slot_of_set(e, a);
    if (*si < 0 || (L->kv_buf && *si != L->slot)) return NULL;
    L->slot = *si;
    if (!kv_cache(e, l)) return NULL;
    const int64_t hd = hp->n_embd / hp->n_head;
    struct ggml_tensor *cur = ggml_mul(ctx, ggml_rms_norm(ctx, inp, hp->eps), attn_norm);
    struct ggml_tensor *q = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, wq, cur), hd, hp->n_head, n);
    struct ggml_tensor *k = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, wk, cur), hd, hp->n_head_kv, n);
    struct ggml_tensor *v = ggml_mul_mat(ctx, wv, cur); /* [n_kv_embd, n] */
    cur = attention(e, ctx, gf, L, q, k, v, pos, mask, pos0, n, n_kv);
    cur = ggml_mul_mat(ctx, wo, cur);
    struct ggml_tensor *ffn_inp = ggml_add(ctx, cur, inp);
    cur = ggml_mul(ctx, ggml_rms_norm(ctx, ffn_inp, hp->eps), ffn_norm);
    struct ggml_tensor *t_up = ggml_mul_mat(ctx, up, cur), *t_gate = ggml_mul_mat(ctx, gate, cur);
    cur = ggml_mul_mat(ctx, down, ggml_swiglu_split(ctx, t_gate, t_up));
    return ggml_add(ctx, cur, ffn_inp);
}

#define BLOCK_NODES 64 /* graph nodes (and tensors beside the weights) of one block, at most */

/*
 * Blocks l0 .. l0 + cnt - 1 (their acquired sets a[], all on one device) on x
 * (host, n_embd x n, updated in place): tokens at positions pos0 .. pos0 + n - 1,
 * attending to the cache up to pos0 + n. One graph: the activations stay on
 * the device from block to block, and an RPC server is asked once, not once
 * per block. Its compute time is shared evenly among the blocks' figures.
 */
static bool blocks(engine *e, int l0, int cnt, tl_acquired *const *a, int pos0, int n, float *x) {
    const hparams *hp = &e->hp;
    size_t graph_size = (size_t)BLOCK_NODES * (size_t)cnt + 16;
    struct ggml_init_params ip = {ggml_tensor_overhead() * (graph_size + 16 * (size_t)cnt) +
                                      ggml_graph_overhead_custom(graph_size, false),
                                  NULL, true};
    struct ggml_context *ctx = ggml_init(ip);
    if (!ctx) return false;
    const int n_kv = kv_rows(e, pos0, n);
    struct ggml_tensor *inp = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp->n_embd, n);
    struct ggml_tensor *pos = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n);
    struct ggml_tensor *mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_kv, n);
    ggml_set_input(inp);
    ggml_set_input(pos);
    ggml_set_input(mask);
    struct ggml_cgraph *gf = ggml_new_graph_custom(ctx, graph_size, false);
    struct ggml_tensor *out = inp;
    int si = -1;
    for (int i = 0; i < cnt && out; i++) {
        int sj = -1;
        out = block_nodes(e, ctx, gf, l0 + i, a[i], out, pos, mask, pos0, n, n_kv, &sj);
        if (out && si >= 0 && sj != si) {
            fprintf(stderr, "tl-llama: blocks %d and %d: on different devices\n", l0, l0 + i);
            out = NULL;
        }
        si = sj;
    }
    int32_t *p = NULL;
    float *mk = NULL;
    bool ok = out && batch_inputs(pos0, n, n_kv, &p, &mk);
    if (ok) {
        struct ggml_tensor *in[] = {inp, pos, mask};
        const void *src[] = {x, p, mk};
        double t = 0;
        ok = graph_io(e, si, gf, out, in, src, 3, x, &t);
        for (int i = 0; ok && i < cnt; i++)
            e->layer_compute[l0 + i] += t / cnt;
    }
    free(p);
    free(mk);
    ggml_free(ctx);
    return ok;
}

/* The output matrix of set a: output.weight, else (tied embeddings) token_embd.weight. */
static const char *output_name(const tl_acquired *a) {
    return find_tensor(a, "output.weight") >= 0 ? "output.weight" : "token_embd.weight";
}

/* logits (host, n_vocab x n) = output . (rmsnorm(x) * output_norm). */
static bool head(engine *e, const tl_acquired *other, const float *x, int n, float *logits) {
    tl_status st = TL_OK;
    struct ggml_context *ctx = graph_ctx();
    if (!ctx) return false;
    struct ggml_tensor *norm = take(e, ctx, other, "output_norm.weight", &st);
    struct ggml_tensor *w = take(e, ctx, other, output_name(other), &st);
    int si = norm && w ? slot_of_set(e, other) : -1;
    bool ok = !st && si >= 0;
    if (ok) {
        struct ggml_tensor *inp = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, e->hp.n_embd, n);
        ggml_set_input(inp);
        struct ggml_tensor *cur = ggml_mul(ctx, ggml_rms_norm(ctx, inp, e->hp.eps), norm);
        const void *src[] = {x};
        ok = graph_io(e, si, ggml_new_graph(ctx), ggml_mul_mat(ctx, w, cur), &inp, src, 1, logits,
                      NULL);
    } else {
        fprintf(stderr, "tl-llama: output weights missing or not bound (%s)\n",
                tl_status_name(st));
    }
    ggml_free(ctx);
    return ok;
}

/* ---- row split: every matrix cut by rows over the devices, all computing at once ---- */

#define ROUND_MAX 3 /* products of one round, at most */

/*
 * What a round does with the FFN's hidden state: nothing; SWIGLU: the names
 * are gate and up, and each device computes silu(gate . x) * (up . x) for its
 * rows and keeps them (slot h) for the next round; FROM_H: the input is that
 * kept state, the host sending each device only the rows it lacks.
 */
enum round_kind { PLAIN, SWIGLU, FROM_H };

/* One device's share of a round: a graph of its rows of every product, joined in one output. */
typedef struct round_dev {
    int slot;
    struct ggml_context *ctx;
    struct ggml_cgraph *gf;
    struct ggml_tensor *in, *out; /* [in, n]; [rows of every piece, n] */
    int n_pieces;
    struct piece {
        int prod;               /* the product (index into the round's names) */
        int64_t row0, rows, at; /* its rows row0 .. row0 + rows, at row `at` of out */
        struct ggml_tensor *y;
    } piece[ROUND_MAX + 1];
} round_dev;

/* Slot sl's hidden-state tensor, for at least n tokens of `rows` (made or made larger). */
static bool slot_h(slot *sl, int64_t rows, int n) {
    if (sl->h && sl->h->ne[0] == rows && sl->h->ne[1] >= n) return true;
    if (sl->h_buf) ggml_backend_buffer_free(sl->h_buf);
    if (sl->h_ctx) ggml_free(sl->h_ctx);
    sl->h_buf = NULL;
    sl->h = NULL;
    struct ggml_init_params ip = {ggml_tensor_overhead(), NULL, true};
    if (!(sl->h_ctx = ggml_init(ip))) return false;
    sl->h = ggml_new_tensor_2d(sl->h_ctx, GGML_TYPE_F32, rows, n);
    sl->h_buf = ggml_backend_alloc_ctx_tensors(sl->h_ctx, sl->be);
    return sl->h_buf != NULL;
}

/* The entry of slot si in devs[0 .. *n) (added, with its graph, when absent); NULL on failure. */
static round_dev *round_dev_of(engine *e, round_dev *devs, int *n, int si, enum round_kind kind,
                               int64_t in, int n_tok) {
    for (int i = 0; i < *n; i++)
        if (devs[i].slot == si) return &devs[i];
    if (*n == MAX_SLOTS) return NULL;
    round_dev *d = &devs[(*n)++];
    memset(d, 0, sizeof *d);
    d->slot = si;
    struct ggml_init_params ip = {ggml_tensor_overhead() * 32 + ggml_graph_overhead(), NULL, true};
    if (!(d->ctx = ggml_init(ip))) return NULL;
    slot *sl = &e->slots[si];
    if (kind == FROM_H) {
        if (!slot_h(sl, in, n_tok)) return NULL;
        d->in = ggml_view_2d(d->ctx, sl->h, in, n_tok, sl->h->nb[1], 0);
    } else {
        d->in = ggml_new_tensor_2d(d->ctx, GGML_TYPE_F32, in, n_tok);
        ggml_set_input(d->in);
    }
    d->gf = ggml_new_graph(d->ctx);
    return d;
}

/*
 * Device d's graph: with SWIGLU, gate's and up's pieces of the same rows
 * joined and kept in the slot's hidden state; then every piece in one output.
 */
static bool round_graph(engine *e, round_dev *d, enum round_kind kind, int64_t h_rows, int n) {
    slot *sl = &e->slots[d->slot];
    if (kind == SWIGLU) {
        int w = 0;
        for (int i = 0; i < d->n_pieces; i++) {
            struct piece *g = &d->piece[i];
            if (g->prod != 0) continue;
            struct piece *u = NULL;
            for (int j = 0; j < d->n_pieces; j++)
                if (d->piece[j].prod == 1 && d->piece[j].row0 == g->row0 &&
                    d->piece[j].rows == g->rows)
                    u = &d->piece[j];
            if (!u || w == MAX_HELD) break;
            d->piece[w] = *g;
            d->piece[w].y = ggml_swiglu_split(d->ctx, g->y, u->y);
            sl->held[w][0] = g->row0;
            sl->held[w][1] = g->row0 + g->rows;
            w++;
        }
        if (2 * w != d->n_pieces) {
            fprintf(stderr,
                    "tl-llama: on %s, the gate's and up's rows differ: SwiGLU needs "
                    "both halves of each row\n",
                    sl->desc);
            return false;
        }
        d->n_pieces = sl->n_held = w;
        if (!slot_h(sl, h_rows, n)) return false;
        for (int i = 0; i < w; i++) /* kept for the next round: each column's rows */
            ggml_build_forward_expand(
                d->gf, ggml_cpy(d->ctx, d->piece[i].y,
                                ggml_view_2d(d->ctx, sl->h, d->piece[i].rows, n, sl->h->nb[1],
                                             (size_t)d->piece[i].row0 * sizeof(float))));
    }
    int64_t at = 0;
    for (int i = 0; i < d->n_pieces; i++) {
        d->piece[i].at = at;
        at += d->piece[i].rows;
        d->out = i ? ggml_concat(d->ctx, d->out, d->piece[i].y, 0) : d->piece[i].y;
    }
    ggml_set_output(d->out);
    ggml_build_forward_expand(d->gf, d->out);
    return run_graph(e, sl, d->gf);
}

/* The input of device d's round sent: x whole, or (FROM_H) the rows its kept state lacks. */
static void round_input(slot *sl, const round_dev *d, enum round_kind kind, const float *x,
                        int64_t in, int n) {
    if (kind != FROM_H) {
        ggml_backend_tensor_set_async(sl->be, d->in, x, 0, ggml_nbytes(d->in));
        return;
    }
    int64_t r = 0;
    while (r < in) { /* the next gap: from r to the next held range's start */
        int64_t next = in, skip_to = -1;
        for (int k = 0; k < sl->n_held; k++)
            if (sl->held[k][0] <= r && r < sl->held[k][1])
                skip_to = sl->held[k][1];
            else if (sl->held[k][0] > r && sl->held[k][0] < next)
                next = sl->held[k][0];
        if (skip_to >= 0) {
            r = skip_to;
            continue;
        }
        for (int c = 0; c < n; c++)
            ggml_backend_tensor_set_async(sl->be, sl->h, x + (size_t)c * (size_t)in + (size_t)r,
                                          ((size_t)c * (size_t)in + (size_t)r) * sizeof *x,
                                          (size_t)(next - r) * sizeof *x);
        r = next;
    }
}

/*
 * One round of matrix products with the same input: outs[j] (host, n columns
 * of rows_j floats) = weight names[j] of set a times x (host, n columns of
 * `in` floats). Each device holding rows of them computes its rows of every
 * product in one graph, all devices at once: every device is asked (input,
 * graph and the read of its output queued without waiting) before any answer
 * is awaited, and the rows come back into place. A row is the same dot
 * product wherever it is computed: the result is the whole product's, bit
 * for bit. kind: see round_kind (with SWIGLU, outs[0] is the hidden state).
 * The time is added to *acc.
 */
static bool products(engine *e, const tl_acquired *a, const char *const *names, int k,
                     enum round_kind kind, const float *x, int64_t in, int n, float *const *outs,
                     double *acc) {
    double t0 = now();
    round_dev devs[MAX_SLOTS];
    int n_devs = 0;
    int64_t rows[ROUND_MAX];
    bool ok = k <= ROUND_MAX && (kind != SWIGLU || k == 2);
    for (int i = 0; i < e->n_slots && kind == SWIGLU; i++)
        e->slots[i].n_held = 0; /* a device with no rows of it holds none */
    for (int j = 0; j < k && ok; j++) {
        int i = find_tensor(a, names[j]);
        const tl_session_tensor *t = i >= 0 ? tl_acquired_tensor(a, (size_t)i) : NULL;
        if (!t || t->info->n_dims != 2 || t->info->shape[1] != in) {
            fprintf(stderr, "tl-llama: %s: missing, or not a matrix of %lld columns\n", names[j],
                    (long long)in);
            ok = false;
            break;
        }
        rows[j] = t->info->shape[0];
        for (uint32_t p = 0; p < t->n_parts && ok; p++) {
            const tl_session_part *pt = &t->parts[p];
            int64_t r0 = (int64_t)pt->row_begin, nr = (int64_t)(pt->row_end - pt->row_begin);
            int si = slot_of(e, pt->device);
            round_dev *d = si >= 0 ? round_dev_of(e, devs, &n_devs, si, kind, in, n) : NULL;
            struct ggml_tensor *w =
                d && d->n_pieces < ROUND_MAX
                    ? ggml_new_tensor_2d(d->ctx, (enum ggml_type)t->info->dtype, in, nr)
                    : NULL;
            tl_status st = w ? tl_session_bind_ggml_part(e->s, a, (size_t)i, p, w) : TL_ERR_NOMEM;
            if (st) {
                fprintf(stderr, "tl-llama: bind %s (rows %lld..%lld): %s\n", t->info->name,
                        (long long)r0, (long long)(r0 + nr),
                        w ? tl_last_error() : "no device, or out of memory");
                ok = false;
                break;
            }
            d->piece[d->n_pieces++] = (struct piece){j, r0, nr, 0, ggml_mul_mat(d->ctx, w, d->in)};
        }
    }
    size_t total = 0;
    for (int i = 0; i < n_devs && ok; i++) {
        ok = round_graph(e, &devs[i], kind, rows[0], n);
        if (ok) total += ggml_nbytes(devs[i].out);
    }
    float *buf = ok ? malloc(total) : NULL;
    ok = ok && buf;
    /* servers first: their computes return at once; a local backend's runs in the call */
    for (int pass = 0; pass < 2 && ok; pass++)
        for (int i = 0, at = 0; i < n_devs && ok; at += (int)(devs[i].out->ne[0] * n), i++) {
            slot *sl = &e->slots[devs[i].slot];
            if ((pass == 0) == sl->is_cpu) continue;
            atomic_store(&g_working_on, sl->desc);
            round_input(sl, &devs[i], kind, x, in, n);
            ok = ggml_backend_graph_compute_async(sl->be, devs[i].gf) == GGML_STATUS_SUCCESS;
            if (ok)
                ggml_backend_tensor_get_async(sl->be, devs[i].out, buf + at, 0,
                                              ggml_nbytes(devs[i].out));
        }
    for (int i = 0, at = 0; i < n_devs && ok; at += (int)(devs[i].out->ne[0] * n), i++) {
        const round_dev *d = &devs[i];
        atomic_store(&g_working_on, e->slots[d->slot].desc);
        ggml_backend_synchronize(e->slots[d->slot].be);
        for (int q = 0; q < d->n_pieces; q++) {
            const struct piece *pc = &d->piece[q];
            for (int c = 0; c < n; c++)
                memcpy(outs[pc->prod] + (size_t)c * (size_t)rows[pc->prod] + (size_t)pc->row0,
                       buf + at + (size_t)c * (size_t)d->out->ne[0] + (size_t)pc->at,
                       (size_t)pc->rows * sizeof *buf);
        }
    }
    free(buf);
    for (int i = 0; i < n_devs; i++)
        if (devs[i].ctx) ggml_free(devs[i].ctx);
    double dt = now() - t0;
    e->compute_s += dt;
    if (acc) *acc += dt;
    return ok;
}

/* graph_io on the host (ggml's CPU backend); frees ctx. */
static bool on_host(engine *e, struct ggml_context *ctx, struct ggml_cgraph *gf,
                    struct ggml_tensor *const *in, const void *const *src, int n_in,
                    struct ggml_tensor *out, float *dst) {
    int si = slot_of(e, NULL);
    bool ok = si >= 0 && graph_io(e, si, gf, out, in, src, n_in, dst, NULL);
    ggml_free(ctx);
    return ok;
}

/* out (host, n x n_embd) = rmsnorm(x) * weight "name" of set a (kept on the host). */
static bool host_norm(engine *e, const tl_acquired *a, const char *name, const float *x, int n,
                      float *out) {
    tl_status st = TL_OK;
    struct ggml_context *ctx = graph_ctx();
    struct ggml_tensor *w = ctx ? take(e, ctx, a, name, &st) : NULL;
    if (!w) {
        fprintf(stderr, "tl-llama: %s: missing or not bound (%s)\n", name, tl_status_name(st));
        if (ctx) ggml_free(ctx);
        return false;
    }
    struct ggml_tensor *inp = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, e->hp.n_embd, n);
    ggml_set_input(inp);
    struct ggml_tensor *out_t = ggml_mul(ctx, ggml_rms_norm(ctx, inp, e->hp.eps), w);
    const void *src[] = {x};
    return on_host(e, ctx, ggml_new_graph(ctx), &inp, src, 1, out_t, out);
}

/*
 * kqv (host, n x n_embd) = block l's attention on the host, its KV cache there,
 * from q (n x n_embd), k and v (n x n_kv_embd) before RoPE.
 */
static bool host_attention(engine *e, int l, const float *q, const float *k, const float *v,
                           int pos0, int n, float *kqv) {
    const hparams *hp = &e->hp;
    layer_state *L = &e->layers[l];
    int si = slot_of(e, NULL);
    if (si < 0 || (L->kv_buf && L->slot != si)) return false;
    L->slot = si;
    if (!kv_cache(e, l)) return false;
    const int64_t hd = hp->n_embd / hp->n_head, n_kv_embd = hd * hp->n_head_kv;
    const int n_kv = kv_rows(e, pos0, n);
    struct ggml_init_params ip = {ggml_tensor_overhead() * BLOCK_NODES + ggml_graph_overhead(),
                                  NULL, true};
    struct ggml_context *ctx = ggml_init(ip);
    if (!ctx) return false;
    struct ggml_tensor *in[5] = {
        ggml_new_tensor_3d(ctx, GGML_TYPE_F32, hd, hp->n_head, n),
        ggml_new_tensor_3d(ctx, GGML_TYPE_F32, hd, hp->n_head_kv, n),
        ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_kv_embd, n),
        ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n),
        ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_kv, n),
    };
    for (int i = 0; i < 5; i++)
        ggml_set_input(in[i]);
    struct ggml_cgraph *gf = ggml_new_graph(ctx);
    struct ggml_tensor *out =
        attention(e, ctx, gf, L, in[0], in[1], in[2], in[3], in[4], pos0, n, n_kv);
    int32_t *p = NULL;
    float *mk = NULL;
    bool ok = batch_inputs(pos0, n, n_kv, &p, &mk);
    const void *src[5] = {q, k, v, p, mk};
    if (ok)
        ok = on_host(e, ctx, gf, in, src, 5, out, kqv);
    else
        ggml_free(ctx);
    free(p);
    free(mk);
    return ok;
}

/* dst[i] = a[i] + b[i]: ggml_add's element, the residual connection. */
static void add_into(float *dst, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        dst[i] = a[i] + b[i];
}

/*
 * Block l (set a) on x (host, n x n_embd, updated in place), its matrices
 * split by rows over the devices: four rounds of products on every device at
 * once (Q, K and V; the output projection; gate and up, with SwiGLU; down),
 * and between them, on the host, what joins them: RMSNorm, RoPE, the KV
 * cache and the attention, the residuals.
 */
static bool block_rows(engine *e, int l, const tl_acquired *a, int pos0, int n, float *x) {
    const hparams *hp = &e->hp;
    const size_t ne = (size_t)hp->n_embd * (size_t)n,
                 nkv = (size_t)(hp->n_embd / hp->n_head * hp->n_head_kv) * (size_t)n,
                 nff = (size_t)hp->n_ff * (size_t)n;
    float *mem = malloc((5 * ne + 2 * nkv + nff) * sizeof *mem);
    if (!mem) return false;
    float *cur = mem, *q = cur + ne, *kqv = q + ne, *o = kqv + ne, *ffn_inp = o + ne,
          *k = ffn_inp + ne, *v = k + nkv, *h = v + nkv;
    double *acc = &e->layer_compute[l];
    const char *qkv[] = {"attn_q.weight", "attn_k.weight", "attn_v.weight"},
               *wo[] = {"attn_output.weight"}, *gate_up[] = {"ffn_gate.weight", "ffn_up.weight"},
               *down[] = {"ffn_down.weight"};
    float *qkv_out[] = {q, k, v}, *o_out[] = {o}, *h_out[] = {h}, *d_out[] = {o};
    bool ok = host_norm(e, a, "attn_norm.weight", x, n, cur) &&
              products(e, a, qkv, 3, PLAIN, cur, hp->n_embd, n, qkv_out, acc) &&
              host_attention(e, l, q, k, v, pos0, n, kqv) &&
              products(e, a, wo, 1, PLAIN, kqv, hp->n_embd, n, o_out, acc);
    if (ok) {
        add_into(ffn_inp, o, x, ne);
        ok = host_norm(e, a, "ffn_norm.weight", ffn_inp, n, cur) &&
             products(e, a, gate_up, 2, SWIGLU, cur, hp->n_embd, n, h_out, acc) &&
             products(e, a, down, 1, FROM_H, h, hp->n_ff, n, d_out, acc);
    }
    if (ok) add_into(x, o, ffn_inp, ne);
    free(mem);
    return ok;
}

/* logits (host, n x n_vocab) = output . (rmsnorm(x) * output_norm), the output split by rows. */
static bool head_rows(engine *e, const tl_acquired *other, const float *x, int n, float *logits) {
    float *cur = malloc((size_t)e->hp.n_embd * (size_t)n * sizeof *cur);
    const char *w[] = {output_name(other)};
    float *outs[] = {logits};
    bool ok = cur && host_norm(e, other, "output_norm.weight", x, n, cur) &&
              products(e, other, w, 1, PLAIN, cur, e->hp.n_embd, n, outs, NULL);
    free(cur);
    return ok;
}

/* Acquire; the time it blocks is time waiting for weights (per block in *acc). */
static tl_status acquire(engine *e, size_t l0, size_t l1, bool with_other, tl_acquired **a,
                         double *acc) {
    double t0 = now();
    tl_status s = tl_session_acquire(e->s, TL_COMP_OTHER, l0, l1, with_other, a);
    double dt = now() - t0;
    e->wait_s += dt;
    if (acc) *acc += dt;
    return s;
}

/*
 * One forward pass over tokens tok[0..n) at positions pos0..: the non-layer
 * weights (embedding, output norm and head), every block in turn, the
 * non-layer weights again. Whatever comes next is prefetched before the
 * current step computes: block 0 during the embedding, block l + 1 during
 * block l, the head's weights during the last block, and block 0 of the next
 * pass (when more is true) during the head. With the weights kept whole
 * (e->chain) the blocks that follow one another on one device are computed
 * as one graph.
 */
static tl_status forward(engine *e, const int32_t *tok, int n, int pos0, bool more,
                         float *logits) {
    float *x = malloc((size_t)n * (size_t)e->hp.n_embd * sizeof *x);
    if (!x) return TL_ERR_NOMEM;
    tl_acquired *a = NULL;
    tl_status s = acquire(e, 0, 0, true, &a, NULL);
    if (!s) s = tl_session_prefetch(e->s, TL_COMP_OTHER, 0, 1, false);
    if (!s && !embed(e, a, tok, n, x)) s = TL_ERR_DEVICE;
    tl_session_release(e->s, a);
    tl_acquired *carry = NULL; /* a block acquired for a run of blocks it did not join */
    for (int l = 0; l < e->hp.n_layer && !s;) {
        if (e->row) { /* every device on every block */
            tl_acquired *b = NULL;
            if (!(s = acquire(e, (size_t)l, (size_t)l + 1, false, &b, &e->layer_wait[l]))) {
                if (!block_rows(e, l, b, pos0, n, x)) s = TL_ERR_DEVICE;
                tl_session_release(e->s, b);
            }
            l++;
            continue;
        }
        /* the next block, or (weights kept whole) the next blocks on one device */
        int cnt = 0;
        tl_device *dev = NULL;
        while (l + cnt < e->hp.n_layer) {
            tl_acquired *b = carry;
            carry = NULL;
            size_t k = (size_t)(l + cnt);
            if (!b && (s = acquire(e, k, k + 1, false, &b, &e->layer_wait[k]))) break;
            tl_device *d = set_device(b);
            if (cnt && d != dev) {
                carry = b;
                break;
            }
            dev = d;
            e->held[cnt++] = b;
            if (!e->chain) break;
        }
        if (!s && !e->chain)
            s = l + 1 < e->hp.n_layer
                    ? tl_session_prefetch(e->s, TL_COMP_OTHER, (size_t)l + 1, (size_t)l + 2, false)
                    : tl_session_prefetch(e->s, TL_COMP_OTHER, 0, 0, true);
        if (!s && !blocks(e, l, cnt, e->held, pos0, n, x)) s = TL_ERR_DEVICE;
        for (int i = 0; i < cnt; i++)
            tl_session_release(e->s, e->held[i]);
        l += cnt;
    }
    if (carry) tl_session_release(e->s, carry);
    if (!s && !(s = acquire(e, 0, 0, true, &a, NULL))) {
        if (more) s = tl_session_prefetch(e->s, TL_COMP_OTHER, 0, 1, false);
        if (!s && !(e->row ? head_rows : head)(e, a, x, n, logits)) s = TL_ERR_DEVICE;
        tl_session_release(e->s, a);
    }
    free(x);
    return s;
}

/* ---- setup ---- */

static bool meta_u(const tl_model *m, const char *key, int64_t *out, bool required) {
    size_t i = tl_model_meta_find(m, key);
    if (i == TL_NOT_FOUND) {
        if (required) fprintf(stderr, "tl-llama: the model has no %s\n", key);
        return !required;
    }
    *out = (int64_t)tl_model_meta(m, i)->v.u;
    return true;
}

static bool meta_f(const tl_model *m, const char *key, float *out) {
    size_t i = tl_model_meta_find(m, key);
    if (i != TL_NOT_FOUND) *out = (float)tl_model_meta(m, i)->v.f;
    return true;
}

static bool read_hparams(engine *e) {
    hparams *h = &e->hp;
    size_t arch = tl_model_meta_find(e->m, "general.architecture");
    if (arch == TL_NOT_FOUND || tl_model_meta(e->m, arch)->v.s.len != 5 ||
        memcmp(tl_model_meta(e->m, arch)->v.s.ptr, "llama", 5)) {
        fprintf(stderr, "tl-llama: not a llama-architecture GGUF\n");
        return false;
    }
    h->eps = 1e-5f;
    h->freq_base = 10000.0f;
    h->n_ctx_train = 2048;
    h->n_head_kv = -1;
    h->n_rot = -1;
    if (!meta_u(e->m, "llama.embedding_length", &h->n_embd, true) ||
        !meta_u(e->m, "llama.block_count", &h->n_layer, true) ||
        !meta_u(e->m, "llama.feed_forward_length", &h->n_ff, true) ||
        !meta_u(e->m, "llama.attention.head_count", &h->n_head, true) ||
        !meta_u(e->m, "llama.attention.head_count_kv", &h->n_head_kv, false) ||
        !meta_u(e->m, "llama.rope.dimension_count", &h->n_rot, false) ||
        !meta_u(e->m, "llama.context_length", &h->n_ctx_train, false) ||
        !meta_f(e->m, "llama.attention.layer_norm_rms_epsilon", &h->eps) ||
        !meta_f(e->m, "llama.rope.freq_base", &h->freq_base))
        return false;
    if (h->n_head_kv < 0) h->n_head_kv = h->n_head;
    if (h->n_rot < 0) h->n_rot = h->n_embd / h->n_head;
    h->n_vocab = -1;
    for (size_t i = 0; i < tl_model_tensor_count(e->m); i++)
        if (!strcmp(tl_model_tensor(e->m, i)->name, "token_embd.weight"))
            h->n_vocab = tl_model_tensor(e->m, i)->shape[0];
    if (h->n_vocab <= 0 || h->n_head <= 0 || h->n_head_kv <= 0 || h->n_embd % h->n_head ||
        h->n_head % h->n_head_kv || h->n_rot != h->n_embd / h->n_head ||
        (int64_t)tl_model_layer_count(e->m, TL_COMP_OTHER) != h->n_layer) {
        fprintf(stderr, "tl-llama: hyperparameters this engine does not compute (or no "
                        "token_embd.weight)\n");
        return false;
    }
    return true;
}

/*
 * Upload bandwidth to slot s's device (bytes/s): the best of three copies of
 * 64 MiB from host memory into a buffer of the device (for an RPC device: the
 * link to its server). 0 when the buffer cannot be had.
 */
static double link_bandwidth(slot *s) {
    const size_t n = 64u << 20;
    struct ggml_init_params ip = {ggml_tensor_overhead(), NULL, true};
    struct ggml_context *ctx = ggml_init(ip);
    unsigned char *host = malloc(n);
    ggml_backend_buffer_t buf =
        ggml_backend_buft_alloc_buffer(ggml_backend_get_default_buffer_type(s->be), n);
    double best = 0;
    if (ctx && host && buf) {
        memset(host, 1, n);
        struct ggml_tensor *t = ggml_new_tensor_1d(ctx, GGML_TYPE_I8, (int64_t)n);
        if (ggml_backend_tensor_alloc(buf, t, ggml_backend_buffer_get_base(buf)) ==
            GGML_STATUS_SUCCESS)
            for (int k = 0; k < 3; k++) {
                double t0 = now();
                ggml_backend_tensor_set(t, host, 0, n);
                ggml_backend_synchronize(s->be);
                double dt = now() - t0;
                if (dt > 0 && (double)n / dt > best) best = (double)n / dt;
            }
    }
    if (buf) ggml_backend_buffer_free(buf);
    free(host);
    if (ctx) ggml_free(ctx);
    return best;
}

/*
 * The offline optimum for this run's schedule as it is carried out: each
 * step holds what it acquires and what it prefetches at once (the embedding
 * with block 0, block k with block k + 1, the last block with the head's
 * weights, the head with block 0 of the next pass). Computed on a second
 * session that loads nothing. false when it cannot be had.
 */
static bool optimum_with_prefetch(engine *e, const tl_session_options *so, size_t n_passes,
                                  uint64_t *bytes) {
    size_t nl = (size_t)e->hp.n_layer, per = nl + 2, k = 0;
    tl_session_step *st = calloc(n_passes * per, sizeof *st);
    tl_session *s2 = NULL;
    bool ok = st && tl_session_create(e->m, e->plan, so, &s2) == TL_OK;
    for (size_t p = 0; ok && p < n_passes; p++) {
        st[k++] = (tl_session_step){TL_COMP_OTHER, 0, 1, true};
        for (size_t l = 0; l < nl; l++)
            st[k++] = l + 1 < nl ? (tl_session_step){TL_COMP_OTHER, l, l + 2, false}
                                 : (tl_session_step){TL_COMP_OTHER, l, l + 1, true};
        st[k++] = (tl_session_step){TL_COMP_OTHER, 0, p + 1 < n_passes ? 1 : 0, true};
    }
    ok = ok && tl_session_set_schedule(s2, st, k) == TL_OK &&
         tl_session_optimal_bytes(s2, bytes) == TL_OK;
    tl_session_destroy(s2);
    free(st);
    return ok;
}

static int usage(void) {
    fprintf(stderr, "usage: tl-llama MODEL.gguf --tokens 1,2,3,... --n-predict N --logits OUT.f32\n"
                    "                [--device NAME] [--budget SIZE] [--rpc HOST:PORT,...]\n"
                    "                [--split-devices A,B] [--split-mode layer|row] [--threads N]\n"
                    "                [--ggml-dir DIR] [--json]\n"
                    "                [--measure-link]\n");
    return 2;
}

static bool parse_tokens(const char *v, int32_t **out, int *n) {
    int cap = 16;
    int32_t *t = malloc((size_t)cap * sizeof *t);
    *n = 0;
    for (const char *p = v; t && *p;) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 0 || x > INT32_MAX || (*end && *end != ',')) break;
        if (*n == cap) {
            int32_t *nt = realloc(t, (size_t)(cap *= 2) * sizeof *t);
            if (!nt) break;
            t = nt;
        }
        t[(*n)++] = (int32_t)x;
        p = *end ? end + 1 : end;
        if (!*p) {
            *out = t;
            return *n > 0;
        }
    }
    free(t);
    return false;
}

static int run_engine(int argc, char **argv) {
    const char *model = NULL, *logits_path = NULL, *device = "ggml:CPU", *rpc = NULL, *split = NULL,
               *ggml_dir = TL_LLAMA_GGML_DIR, *tokens = NULL, *mode = "layer";
    uint64_t budget = 0;
    int n_predict = -1, threads = 1;
    bool json = false, measure_link = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--tokens") && v)
            tokens = v, i++;
        else if (!strcmp(a, "--n-predict") && v)
            n_predict = atoi(v), i++;
        else if (!strcmp(a, "--logits") && v)
            logits_path = v, i++;
        else if (!strcmp(a, "--device") && v)
            device = v, i++;
        else if (!strcmp(a, "--budget") && v) {
            bool neg = false;
            if (tl_parse_bytes(v, &budget, &neg) != TL_OK || neg || !budget) return usage();
            i++;
        }
        else if (!strcmp(a, "--rpc") && v)
            rpc = v, i++;
        else if (!strcmp(a, "--split-devices") && v)
            split = v, i++;
        else if (!strcmp(a, "--split-mode") && v)
            mode = v, i++;
        else if (!strcmp(a, "--threads") && v)
            threads = atoi(v), i++;
        else if (!strcmp(a, "--ggml-dir") && v)
            ggml_dir = v, i++;
        else if (!strcmp(a, "--json"))
            json = true;
        else if (!strcmp(a, "--measure-link"))
            measure_link = true;
        else if (a[0] != '-' && !model)
            model = a;
        else
            return usage();
    }
    int32_t *tok = NULL;
    int n_prompt = 0;
    if (!model || !tokens || n_predict < 0 || !logits_path || threads < 1 ||
        (strcmp(mode, "layer") && strcmp(mode, "row")) || !parse_tokens(tokens, &tok, &n_prompt))
        return usage();
    if (!strcmp(mode, "row") && split && budget) {
        fprintf(stderr, "tl-llama: --split-mode row keeps every weight on its devices: it takes "
                        "no --budget\n");
        return 2;
    }

    engine e = {0};
    e.threads = threads;
    tl_status s;
    const char *paths[] = {model};
    if ((s = tl_model_open(paths, 1, NULL, &e.m))) return fail(model, s);
    if (!read_hparams(&e)) return 1;
    for (int i = 0; i < n_prompt; i++)
        if (tok[i] >= e.hp.n_vocab) {
            fprintf(stderr, "tl-llama: token %d is outside the vocabulary (%lld)\n", tok[i],
                    (long long)e.hp.n_vocab);
            return 2;
        }
    e.n_ctx = (n_prompt + n_predict + 1 + 255) / 256 * 256;
    e.layers = calloc((size_t)e.hp.n_layer, sizeof *e.layers);
    e.layer_wait = calloc((size_t)e.hp.n_layer, sizeof *e.layer_wait);
    e.layer_compute = calloc((size_t)e.hp.n_layer, sizeof *e.layer_compute);
    e.held = calloc((size_t)e.hp.n_layer, sizeof *e.held);
    if (!e.layers || !e.layer_wait || !e.layer_compute || !e.held)
        return fail("memory", TL_ERR_NOMEM);

    /* 1. ggml's devices registered before planning, so the plan can place weights on them */
    if ((s = tl_device_ggml_discover(ggml_dir, NULL)))
        return fail("ggml (build it with `make ggml`)", s);
    tl_device_ggml_on_abort(on_ggml_abort);
    if (rpc && (s = tl_device_ggml_rpc_add(rpc, NULL))) return fail("--rpc", s);

    /*
     * 2. The plan: component other on the device named, with --budget (0: its total): whole
     * when it fits, else streamed through it. With --split-devices, its blocks split over the
     * two (a plan made as if each had the model's size, so the split is even), and the session
     * then holds each device to --budget: each streams its own blocks when they do not fit.
     */
    char names[2][TL_DEVICE_NAME_MAX];
    int n_names = 1;
    snprintf(names[0], sizeof names[0], "%s", split ? split : device);
    if (split) {
        char *comma = strchr(names[0], ',');
        if (!comma) return usage();
        *comma = 0;
        snprintf(names[1], sizeof names[1], "%s", comma + 1);
        n_names = 2;
    }
    uint64_t model_bytes = 0;
    for (size_t i = 0; i < tl_model_tensor_count(e.m); i++)
        model_bytes += tl_model_tensor(e.m, i)->nbytes;
    tl_plan_device devs[3];
    memset(devs, 0, sizeof devs);
    for (int i = 0; i < n_names; i++) {
        tl_device *d = NULL;
        tl_device_info info;
        if ((s = tl_device_find(names[i], &d)) || (s = tl_device_describe(d, &info, sizeof info)))
            return fail(names[i], s);
        snprintf(devs[i].name, sizeof devs[i].name, "%s", tl_device_name(d));
        devs[i].is_gpu = true;
        devs[i].total = devs[i].free =
            split ? model_bytes : budget ? budget : info.total;
        tl_device_release(d);
    }
    snprintf(devs[n_names].name, sizeof devs[n_names].name, "cpu");
    char spec[128], reserve[64];
    snprintf(spec, sizeof spec, n_names == 2 ? "other=%s&%s" : "other=%s", devs[0].name,
             devs[1].name);
    /* the compute reserve: the KV caches (F16, K and V, n_ctx rows per block) and a bound on
       the compute buffers of the largest graph (the prompt's) */
    uint64_t n_kv_embd = (uint64_t)(e.hp.n_embd / e.hp.n_head * e.hp.n_head_kv);
    uint64_t kv_all = 2 * 2 * (uint64_t)e.n_ctx * n_kv_embd * (uint64_t)e.hp.n_layer;
    uint64_t act = (uint64_t)n_prompt *
                       (uint64_t)(10 * e.hp.n_embd + 4 * e.hp.n_ff +
                                  3 * e.hp.n_head * (int64_t)e.n_ctx + 2 * e.hp.n_vocab) *
                       4 +
                   (1u << 20);
    snprintf(reserve, sizeof reserve, "other=%llu", (unsigned long long)(kv_all + act));
    tl_plan_options po;
    tl_plan_options_init(&po);
    po.backend = spec;
    po.reserve = reserve;
    e.row = split && !strcmp(mode, "row");
    if (e.row) {
        /* every matrix cut by rows over the devices; the norms and the token embedding (a
           lookup, as llama.cpp keeps it) on the host, in the file's mapping */
        po.row_split = 1u << TL_COMP_OTHER;
        po.overrides = "token_embd\\.weight=cpu,_norm\\.weight$=cpu";
        s = tl_plan_create_for_model(e.m, TL_DTYPE_INVALID, devs, (size_t)n_names + 1, &po,
                                     &e.plan);
        if (!s && !tl_plan_feasible(e.plan)) { /* no matrix to cut (both sides >= 256) */
            fprintf(stderr, "tl-llama: no row split (%s): splitting by layers\n",
                    tl_plan_error(e.plan));
            tl_plan_destroy(e.plan);
            e.plan = NULL;
            e.row = false;
            po.row_split = 0;
            po.overrides = NULL;
        }
    }
    if (!e.row) {
        tl_plan_summary sum;
        if ((s = tl_plan_summary_from_model(e.m, TL_DTYPE_INVALID, &sum)))
            return fail("summary", s);
        s = tl_plan_create(&sum, devs, (size_t)n_names + 1, &po, &e.plan);
        if (!s && !tl_plan_feasible(e.plan)) { /* does not fit whole: stream it through */
            tl_plan_destroy(e.plan);
            e.plan = NULL;
            po.offload_to_cpu = true;
            s = tl_plan_create(&sum, devs, (size_t)n_names + 1, &po, &e.plan);
        }
        tl_plan_summary_clear(&sum);
    }
    if (s) return fail("plan", s);
    if ((s = tl_plan_check(e.plan))) return fail("plan", s);
    tl_plan_decision dec;
    tl_plan_decision_of(e.plan, TL_COMP_OTHER, &dec, sizeof dec);

    /* 3. The session, told the run's order of acquires (other once, then every block per pass). */
    tl_session_options so;
    tl_session_options_init(&so);
    /* with a budget, host-pointer devices (ggml:CPU) get weights in their own memory under it,
       so that streaming through them moves bytes as through a GPU */
    so.no_zero_copy = budget > 0;
    uint64_t weight_budgets[3] = {0, 0, 0};
    if (split && budget) {
        if (budget <= kv_all + act) {
            fprintf(stderr, "tl-llama: --budget %llu leaves nothing for weights beside the "
                            "KV caches and compute buffers (%llu)\n",
                    (unsigned long long)budget, (unsigned long long)(kv_all + act));
            return 1;
        }
        weight_budgets[0] = weight_budgets[1] = budget - kv_all - act;
        so.device_budgets = weight_budgets;
        so.n_device_budgets = 3;
    }
    if ((s = tl_session_create(e.m, e.plan, &so, &e.s))) return fail("session", s);
    size_t n_passes = 1 + (size_t)n_predict, per_pass = (size_t)e.hp.n_layer + 2,
           n_steps = n_passes * per_pass;
    tl_session_step *steps = calloc(n_steps, sizeof *steps);
    if (!steps) return fail("memory", TL_ERR_NOMEM);
    for (size_t p = 0, k = 0; p < n_passes; p++) {
        steps[k++] = (tl_session_step){TL_COMP_OTHER, 0, 0, true};
        for (int64_t l = 0; l < e.hp.n_layer; l++)
            steps[k++] = (tl_session_step){TL_COMP_OTHER, (size_t)l, (size_t)l + 1, false};
        steps[k++] = (tl_session_step){TL_COMP_OTHER, 0, 0, true};
    }
    if ((s = tl_session_set_schedule(e.s, steps, n_steps))) return fail("schedule", s);
    free(steps);
    /* Weights kept whole are all needed by the first token: load them as one batch, so that an
       RPC server gets them in writes large enough for its cache (sent once per model) */
    e.chain = !e.row && dec.mode != TL_PLAN_MODE_STREAM && !(split && budget);
    if ((e.chain || e.row) && (s = tl_session_prefetch(e.s, TL_COMP_OTHER, 0, TL_ALL_LAYERS, true)))
        return fail("prefetch", s);

    /* 4. The run: the prompt as one batch, then each greedy token. */
    FILE *out = fopen(logits_path, "wb");
    if (!out) {
        perror(logits_path);
        return 1;
    }
    double t_start = now();
    float *logits = malloc((size_t)n_prompt * (size_t)e.hp.n_vocab * sizeof *logits);
    int32_t *gen = malloc(((size_t)n_predict + 1) * sizeof *gen);
    if (!logits || !gen) return fail("memory", TL_ERR_NOMEM);
    double t_prompt = 0, t_decode = 0;
    int pos = 0, n = n_prompt;
    const int32_t *in = tok;
    for (size_t p = 0; p < n_passes && !s; p++) {
        double t0 = now();
        s = forward(&e, in, n, pos, p + 1 < n_passes, logits);
        *(p ? &t_decode : &t_prompt) += now() - t0;
        if (s) break;
        if (fwrite(logits, sizeof *logits, (size_t)n * (size_t)e.hp.n_vocab, out) !=
            (size_t)n * (size_t)e.hp.n_vocab) {
            perror(logits_path);
            return 1;
        }
        const float *row = logits + (size_t)(n - 1) * (size_t)e.hp.n_vocab;
        int best = 0;
        for (int v = 1; v < e.hp.n_vocab; v++)
            if (row[v] > row[best]) best = v;
        gen[p] = best;
        pos += n;
        n = 1;
        in = &gen[p];
    }
    double t_total = now() - t_start;
    if (fclose(out) != 0 && !s) {
        perror(logits_path);
        return 1;
    }
    if (s) return fail("run", s);
    printf("greedy:");
    for (int i = 0; i < n_predict; i++)
        printf(" %d", gen[i]);
    printf("\n");

    /* 5. Figures. */
    tl_session_stats st;
    tl_session_stats_get(e.s, &st, sizeof st);
    uint64_t uploaded = 0, optimal = 0, peak = 0;
    for (int t = 0; t < TL_TIER_COUNT; t++)
        uploaded += st.moved[t][TL_TIER_DEVICE];
    bool have_opt = tl_session_optimal_bytes(e.s, &optimal) == TL_OK;
    uint64_t optimal_pf = 0;
    bool have_opt_pf = json && optimum_with_prefetch(&e, &so, n_passes, &optimal_pf);
    if ((s = tl_session_check(e.s))) return fail("session check", s);
    if (json) {
        /* per device: tierload's weights at their peak, plus this engine's KV caches and
           compute buffers there: the device memory the run needed at most */
        printf("{\"mode\":\"%s\",\"budget\":%llu,\"reserve\":%llu,\"devices\":[",
               dec.mode == TL_PLAN_MODE_STREAM        ? "stream"
               : dec.mode == TL_PLAN_MODE_LAYER_SPLIT ? "layer_split"
               : dec.mode == TL_PLAN_MODE_ROW_SPLIT   ? "row_split"
                                                      : "resident",
               (unsigned long long)budget, (unsigned long long)(kv_all + act));
        for (size_t i = 0; i < st.n_devices; i++) {
            uint64_t kv = 0, cb = 0;
            for (int k = 0; k < e.n_slots; k++) {
                if (!e.slots[k].dev || strcmp(tl_device_name(e.slots[k].dev), st.devices[i].name))
                    continue;
                cb += ggml_gallocr_get_buffer_size(e.slots[k].ga, 0);
                if (e.slots[k].h_buf) cb += ggml_backend_buffer_get_size(e.slots[k].h_buf);
                for (int64_t l = 0; l < e.hp.n_layer; l++)
                    if (e.layers[l].kv_buf && e.layers[l].slot == k)
                        kv += ggml_backend_buffer_get_size(e.layers[l].kv_buf);
            }
            uint64_t total = st.devices[i].peak + kv + cb;
            if (total > peak) peak = total;
            printf("%s{\"name\":\"%s\",\"weight_budget\":%llu,\"weight_peak\":%llu,"
                   "\"kv_bytes\":%llu,\"compute_buffer_bytes\":%llu,\"peak_memory\":%llu}",
                   i ? "," : "", st.devices[i].name, (unsigned long long)st.devices[i].budget,
                   (unsigned long long)st.devices[i].peak, (unsigned long long)kv,
                   (unsigned long long)cb, (unsigned long long)total);
        }
        printf("],\"layers\":%lld,\"passes\":%zu,\"prompt_tokens\":%d,\"predicted\":%d,",
               (long long)e.hp.n_layer, n_passes, n_prompt, n_predict);
        printf("\"bytes_uploaded\":%llu,\"optimal_bytes\":", (unsigned long long)uploaded);
        if (have_opt)
            printf("%llu", (unsigned long long)optimal);
        else
            printf("null");
        printf(",\"optimal_bytes_with_prefetch\":");
        if (have_opt_pf)
            printf("%llu", (unsigned long long)optimal_pf);
        else
            printf("null");
        printf(",\"peak_device_memory\":%llu,", (unsigned long long)peak);
        printf("\"weight_wait_s\":%.6f,\"compute_s\":%.6f,\"prompt_s\":%.6f,\"decode_s\":%.6f,"
               "\"total_s\":%.6f,\"decode_tokens_per_s\":%.3f,",
               e.wait_s, e.compute_s, t_prompt, t_decode, t_total,
               t_decode > 0 ? n_predict / t_decode : 0.0);
        printf("\"prefetch_hits\":%llu,\"prefetch_misses\":%llu,\"prefetch_skipped\":%llu,",
               (unsigned long long)st.prefetch_hits, (unsigned long long)st.prefetch_misses,
               (unsigned long long)st.prefetch_skipped);
        printf("\"layer_wait_s\":[");
        for (int64_t l = 0; l < e.hp.n_layer; l++)
            printf("%s%.6f", l ? "," : "", e.layer_wait[l]);
        printf("],\"layer_compute_s\":[");
        for (int64_t l = 0; l < e.hp.n_layer; l++)
            printf("%s%.6f", l ? "," : "", e.layer_compute[l]);
        printf("]");
    }
    /* after the run, its weights freed: the link to each device, measured (JSON only) */
    tl_session_destroy(e.s);
    e.s = NULL;
    if (json && measure_link) {
        printf(",\"link_bytes_per_s\":{");
        for (int i = 0; i < e.n_slots; i++)
            printf("%s\"%s\":%.0f", i ? "," : "",
                   e.slots[i].dev ? tl_device_name(e.slots[i].dev) : "host",
                   link_bandwidth(&e.slots[i]));
        printf("}");
    }
    if (json) printf("}\n");

    for (int64_t l = 0; l < e.hp.n_layer; l++) {
        if (e.layers[l].kv_buf) ggml_backend_buffer_free(e.layers[l].kv_buf);
        if (e.layers[l].kv_ctx) ggml_free(e.layers[l].kv_ctx);
    }
    for (int i = 0; i < e.n_slots; i++) {
        if (e.slots[i].h_buf) ggml_backend_buffer_free(e.slots[i].h_buf);
        if (e.slots[i].h_ctx) ggml_free(e.slots[i].h_ctx);
        ggml_gallocr_free(e.slots[i].ga);
        ggml_backend_free(e.slots[i].be);
        if (e.slots[i].dev) tl_device_release(e.slots[i].dev);
    }
    tl_session_destroy(e.s);
    tl_plan_destroy(e.plan);
    tl_model_close(e.m);
    free(logits);
    free(gen);
    free(tok);
    free(e.layers);
    free(e.layer_wait);
    free(e.layer_compute);
    free(e.held);
    return 0;
}

/*
 * Losing a server. ggml's RPC client ends the process when a server dies or
 * stops answering (TIERLOAD_RPC_TIMEOUT) mid-operation, so with --rpc each try
 * runs in a child process. When a try ends by ggml's abort naming a server,
 * the next one runs without it: --rpc without that endpoint, and the weights
 * placed again on the servers that remain (--split-devices over them, or
 * --device rpc0:0 for one, ggml:CPU for none), loaded again from the file.
 * Greedy decoding is deterministic, so the tokens are those of a run that
 * lost nothing; the logits file is written anew by the last try.
 */
static int supervise(int argc, char **argv, const char *rpc) {
    char list[4096], args_rpc[4200], args_dev[512];
    snprintf(list, sizeof list, "%s", rpc);
    char **cargv = calloc((size_t)argc + 4, sizeof *cargv);
    if (!cargv) return 1;
    bool replanned = false;
    int n = 0;
    for (int attempt = 0;; attempt++) {
        int servers = 0;
        n = 0;
        for (const char *p = list; *p; p++)
            servers += p == list || p[-1] == ',';
        for (int i = 0; i < argc; i++) {
            bool opt_rpc = !strcmp(argv[i], "--rpc");
            bool opt_dev = !strcmp(argv[i], "--device") || !strcmp(argv[i], "--split-devices");
            if (i > 0 && i + 1 < argc && (opt_rpc || (opt_dev && replanned))) {
                i++;
                continue;
            }
            cargv[n++] = argv[i];
        }
        if (list[0]) {
            snprintf(args_rpc, sizeof args_rpc, "%s", list);
            cargv[n++] = "--rpc";
            cargv[n++] = args_rpc;
        }
        if (replanned) {
            args_dev[0] = 0;
            for (int k = 0; k < servers; k++) {
                size_t o = strlen(args_dev);
                snprintf(args_dev + o, sizeof args_dev - o, "%srpc%d:0", k ? "," : "", k);
            }
            cargv[n++] = servers > 1 ? "--split-devices" : "--device";
            cargv[n++] = servers ? args_dev : "ggml:CPU";
        }
        cargv[n] = NULL;
        int fds[2];
        if (!list[0] || pipe(fds) != 0) break;
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            close(fds[0]);
            close(fds[1]);
            break;
        }
        if (pid == 0) {
            close(fds[0]);
            g_lost_fd = fds[1];
            int rc = run_engine(n, cargv);
            fflush(NULL);
            _exit(rc);
        }
        close(fds[1]);
        char msg[2048];
        size_t got = 0;
        ssize_t r;
        while (got < sizeof msg - 1 && (r = read(fds[0], msg + got, sizeof msg - 1 - got)) > 0)
            got += (size_t)r;
        msg[got] = 0;
        close(fds[0]);
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        const char *k = strstr(msg, "ggml RPC server ");
        size_t len = k ? strcspn(k + 16, ", )") : 0;
        if (!k || !len || len >= 300 || attempt >= 16) {
            free(cargv);
            return rc;
        }
        char ep[300];
        memcpy(ep, k + 16, len);
        ep[len] = 0;
        char out[4096] = "";
        char *save = NULL;
        for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            size_t hp = strcspn(t, "@");
            if (hp == len && !strncmp(t, ep, hp)) continue;
            size_t o = strlen(out);
            snprintf(out + o, sizeof out - o, "%s%s", o ? "," : "", t);
        }
        snprintf(list, sizeof list, "%s", out);
        fprintf(stderr, "tl-llama: lost RPC server %s; placing the weights again on %s and "
                        "loading them from the file\n",
                ep, list[0] ? list : "ggml:CPU");
        replanned = true;
    }
    int rc = run_engine(n, cargv); /* no server left (or no fork): in this process */
    free(cargv);
    return rc;
}

int main(int argc, char **argv) {
    const char *rpc = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--rpc")) rpc = argv[i + 1];
    return rpc && *rpc ? supervise(argc, argv, rpc) : run_engine(argc, argv);
}

