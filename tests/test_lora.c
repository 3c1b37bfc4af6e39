/*
 * test_lora.c — LoRA merges: every naming style (the model's own names,
 * lora_A/lora_B, kohya lora_unet_/lora_te_ names, kohya names of diffusers
 * modules on an ldm checkpoint), linear and conv weights in F32, F16 and
 * BF16, LoHa and LoKr, unmatched keys, quantized weights refused, removal
 * and rescaling giving back the file's bytes, the file itself untouched, and
 * a session that reloads merged tensors. Expected values are computed here
 * in double from the matrices the test wrote and rounded to the weight's
 * type by the test's own rounding; the inputs are multiples of 1/8, so the
 * only rounding anywhere is the final one to the weight's type. Large modules
 * are merged with several thread counts (TIERLOAD_MERGE_THREADS).
 */
#include "testutil.h"

#include "gguf_writer.h"
#include "st_writer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- the test's own number encodings ---- */

static uint16_t enc_f16(double v) { /* round to nearest even; |v| normal in F16 or 0 */
    if (v == 0) return 0;
    uint16_t sign = v < 0 ? 0x8000 : 0;
    v = fabs(v);
    int e;
    double m = frexp(v, &e); /* v = m * 2^e, 0.5 <= m < 1 */
    double q = nearbyint(ldexp(m, 11)); /* 11 significant bits */
    if (q == 2048) {
        q = 1024;
        e++;
    }
    assert_true(e - 1 + 15 >= 1 && e - 1 + 15 <= 30);
    return (uint16_t)(sign | ((e - 1 + 15) << 10) | ((int)q - 1024));
}
static double dec_f16(uint16_t h) {
    int e = (h >> 10) & 31, mant = h & 1023;
    double v = e ? ldexp(1024 + mant, e - 25) : ldexp(mant, -24);
    return (h & 0x8000) ? -v : v;
}
static uint16_t enc_bf16(double v) { /* exact in float here; then round to nearest even */
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

/* ---- tensors described by values ---- */

typedef struct tt {
    const char *name;
    const char *dtype; /* "F32", "F16", "BF16" */
    uint32_t nd;
    int64_t shape[4];
    double *v; /* values (multiples of 1/8) */
} tt;

static uint64_t numel(const tt *t) {
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->nd; d++) n *= (uint64_t)t->shape[d];
    return n;
}
static unsigned esize(const char *dt) { return !strcmp(dt, "F32") ? 4 : 2; }

static uint64_t seed_state = 12345;
static double rnd8(void) { /* a multiple of 1/8 in [-2, 2], never 0 */
    seed_state = seed_state * 6364136223846793005ull + 1442695040888963407ull;
    int k = (int)((seed_state >> 33) % 32) - 16;
    if (k == 0) k = 3;
    return k / 8.0;
}
static void fill(tt *t) {
    uint64_t n = numel(t);
    t->v = malloc(n * sizeof(double));
    for (uint64_t i = 0; i < n; i++) t->v[i] = rnd8();
}

static void encode(const char *dt, double v, unsigned char *out) {
    if (!strcmp(dt, "F32")) {
        float f = (float)v;
        memcpy(out, &f, 4);
    } else {
        uint16_t h = !strcmp(dt, "F16") ? enc_f16(v) : enc_bf16(v);
        memcpy(out, &h, 2);
    }
}

static void write_st(const char *path, tt *ts, size_t n) {
    char *hdr = malloc(65536);
    size_t o = 0;
    uint64_t off = 0;
    o += (size_t)sprintf(hdr + o, "{");
    for (size_t i = 0; i < n; i++) {
        uint64_t nb = numel(&ts[i]) * esize(ts[i].dtype);
        o += (size_t)sprintf(hdr + o, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "",
                             ts[i].name, ts[i].dtype);
        for (uint32_t d = 0; d < ts[i].nd; d++)
            o += (size_t)sprintf(hdr + o, "%s%lld", d ? "," : "", (long long)ts[i].shape[d]);
        o += (size_t)sprintf(hdr + o, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                             (unsigned long long)(off + nb));
        off += nb;
    }
    sprintf(hdr + o, "}");
    unsigned char *data = malloc(off ? off : 1);
    off = 0;
    for (size_t i = 0; i < n; i++)
        for (uint64_t k = 0; k < numel(&ts[i]); k++) {
            encode(ts[i].dtype, ts[i].v[k], data + off);
            off += esize(ts[i].dtype);
        }
    size_t len;
    uint8_t *img = sw_build_raw(hdr, data, off, true, &len);
    assert_true(sw_write_file(path, img, len));
    free(img);
    free(data);
    free(hdr);
}

/* ---- expected deltas, computed here ---- */

/* out[o][k] += f * sum_r a[o][r] * b[r][k]   (a: [O, R], b: [R, K]) */
static void lowrank(double *out, const double *a, const double *b, int O, int R, int K, double f) {
    for (int o = 0; o < O; o++)
        for (int k = 0; k < K; k++) {
            double s = 0;
            for (int r = 0; r < R; r++) s += a[o * R + r] * b[r * K + k];
            out[o * K + k] += f * s;
        }
}

/* Model tensor t's bytes must be `want` values rounded to its dtype. */
static void expect_values(tl_model *m, const char *name, const char *dt, const double *want,
                          uint64_t n) {
    size_t i = tl_model_find(m, name);
    assert_true(i != TL_NOT_FOUND);
    const unsigned char *p = tl_model_tensor_data(m, (size_t)i);
    for (uint64_t k = 0; k < n; k++) {
        unsigned char e[4];
        encode(dt, want[k], e);
        if (memcmp(p + k * esize(dt), e, esize(dt)) != 0) {
            double got;
            if (!strcmp(dt, "F32")) {
                float f;
                memcpy(&f, p + k * 4, 4);
                got = f;
            } else {
                uint16_t h;
                memcpy(&h, p + k * 2, 2);
                got = !strcmp(dt, "F16") ? dec_f16(h) : 0;
            }
            fail_msg("%s[%llu]: got %.9g (bits differ), want %.9g", name, (unsigned long long)k,
                     got, want[k]);
        }
    }
}

/* The model of every style: index names used below */
enum {
    M_PROJ_IN, M_CONV1, M_TEQ, M_UPS, M_MIDOUT, M_DOWNS, M_VAE, M_LOHA, M_LOKR, M_SKIP, M_TIME, M_N
};

static tt model_t[M_N] = {
    {"model.diffusion_model.input_blocks.1.1.proj_in.weight", "F32", 2, {4, 6}, NULL},
    {"model.diffusion_model.input_blocks.1.0.in_layers.2.weight", "F16", 4, {4, 3, 3, 3}, NULL},
    {"cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight", "BF16", 2,
     {6, 5}, NULL},
    {"model.diffusion_model.output_blocks.2.1.conv.weight", "F16", 4, {4, 4, 3, 3}, NULL},
    {"model.diffusion_model.middle_block.1.proj_out.weight", "F32", 2, {4, 4}, NULL},
    {"model.diffusion_model.input_blocks.3.0.op.weight", "BF16", 4, {4, 4, 3, 3}, NULL},
    {"first_stage_model.decoder.conv_in.weight", "BF16", 2, {4, 4}, NULL},
    {"model.diffusion_model.input_blocks.4.1.proj_in.weight", "F32", 2, {4, 4}, NULL},
    {"model.diffusion_model.input_blocks.5.1.proj_in.weight", "F16", 2, {6, 4}, NULL},
    {"model.diffusion_model.output_blocks.3.0.skip_connection.weight", "F32", 4, {4, 6, 1, 1}, NULL},
    {"model.diffusion_model.time_embed.0.weight", "F32", 2, {4, 4}, NULL},
};

/* One plain LoRA module: kohya or own name, down [R, K], up [O, R] */
typedef struct pm {
    int target;
    const char *key;
    const char *down_sfx, *up_sfx;
    int R;
    double alpha; /* 0: none */
} pm;

static const pm plain[] = {
    {M_PROJ_IN, "lora_unet_down_blocks_0_attentions_0_proj_in", "lora_down.weight", "lora_up.weight", 2, 1},
    {M_CONV1, "lora_unet_down_blocks_0_resnets_0_conv1", "lora_down.weight", "lora_up.weight", 2, 2},
    {M_TEQ, "lora_te_text_model_encoder_layers_0_self_attn_q_proj", "lora_down.weight", "lora_up.weight", 1, 0},
    {M_UPS, "lora_unet_up_blocks_0_upsamplers_0_conv", "lora_down.weight", "lora_up.weight", 2, 4},
    {M_MIDOUT, "lora_unet_mid_block_attentions_0_proj_out", "lora_down.weight", "lora_up.weight", 2, 1},
    {M_DOWNS, "lora_unet_down_blocks_0_downsamplers_0_conv", "lora_down.weight", "lora_up.weight", 1, 0.5},
    {M_VAE, "first_stage_model.decoder.conv_in", "lora_A.weight", "lora_B.weight", 2, 0},
    {M_SKIP, "lora_unet_up_blocks_1_resnets_0_conv_shortcut", "lora_down.weight", "lora_up.weight", 2, 1},
    {M_TIME, "lora_unet_time_embedding_linear_1", "lora_down.weight", "lora_up.weight", 2, 1},
};
#define N_PLAIN (sizeof plain / sizeof plain[0])

typedef struct fx {
    char *dir, *model, *lora;
    tt lt[64];
    size_t nl;
    double *want[M_N]; /* expected values after the merge at scale SCALE */
} fx;

#define SCALE 0.75

static int64_t inner(const tt *t) { return (int64_t)(numel(t) / (uint64_t)t->shape[0]); }

static tt *add_lt(fx *f, const char *key, const char *sfx, const char *dt, uint32_t nd,
                  const int64_t *shape) {
    tt *t = &f->lt[f->nl++];
    char *name = malloc(256);
    snprintf(name, 256, "%s.%s", key, sfx);
    t->name = name;
    t->dtype = dt;
    t->nd = nd;
    memcpy(t->shape, shape, nd * sizeof(int64_t));
    fill(t);
    return t;
}

static void add_alpha(fx *f, const char *key, double a) {
    int64_t one = 1;
    tt *t = add_lt(f, key, "alpha", "F32", 1, &one);
    t->v[0] = a;
    (void)t;
}

static void setup(fx *f) {
    memset(f, 0, sizeof *f);
    f->dir = tu_tmpdir();
    f->model = tu_path(f->dir, "model.safetensors");
    f->lora = tu_path(f->dir, "lora.safetensors");
    seed_state = 12345;
    for (int i = 0; i < M_N; i++) {
        if (!model_t[i].v) fill(&model_t[i]);
        uint64_t n = numel(&model_t[i]);
        f->want[i] = malloc(n * sizeof(double));
        memcpy(f->want[i], model_t[i].v, n * sizeof(double));
    }
    write_st(f->model, model_t, M_N);
    /* plain modules; the LoRA's own dtypes vary too */
    static const char *ldt[] = {"F32", "F16", "BF16"};
    for (size_t k = 0; k < N_PLAIN; k++) {
        const tt *w = &model_t[plain[k].target];
        int R = plain[k].R;
        int64_t dshape[4] = {R, 0, 0, 0}, ushape[4] = {w->shape[0], R, 1, 1};
        uint32_t dnd = w->nd, und = w->nd == 4 ? 4 : 2;
        for (uint32_t d = 1; d < w->nd; d++) dshape[d] = w->shape[d];
        tt *down = add_lt(f, plain[k].key, plain[k].down_sfx, ldt[k % 3], dnd, dshape);
        tt *up = add_lt(f, plain[k].key, plain[k].up_sfx, ldt[(k + 1) % 3], und, ushape);
        if (plain[k].alpha) add_alpha(f, plain[k].key, plain[k].alpha);
        double fac = SCALE * (plain[k].alpha ? plain[k].alpha / R : 1.0);
        lowrank(f->want[plain[k].target], up->v, down->v, (int)w->shape[0], R, (int)inner(w), fac);
    }
    /* LoHa on input_blocks.4.1.proj_in, ldm kohya naming: (a.b) * (c.d), alpha 1, rank 2 */
    {
        const char *key = "lora_unet_input_blocks_4_1_proj_in";
        int64_t s42[2] = {4, 2}, s24[2] = {2, 4};
        tt *a = add_lt(f, key, "hada_w1_a", "F32", 2, s42), *b = add_lt(f, key, "hada_w1_b", "F32", 2, s24);
        tt *c = add_lt(f, key, "hada_w2_a", "F32", 2, s42), *d = add_lt(f, key, "hada_w2_b", "F32", 2, s24);
        add_alpha(f, key, 1);
        double p1[16] = {0}, p2[16] = {0};
        lowrank(p1, a->v, b->v, 4, 2, 4, 1);
        lowrank(p2, c->v, d->v, 4, 2, 4, 1);
        for (int i = 0; i < 16; i++) f->want[M_LOHA][i] += SCALE * 0.5 * p1[i] * p2[i];
    }
    /* LoKr on input_blocks.5.1.proj_in (diffusers kohya name): kron(w1 [2,2], w2_a.w2_b [3,2]), alpha 2, rank 1 */
    {
        const char *key = "lora_unet_down_blocks_1_attentions_1_proj_in";
        int64_t s22[2] = {2, 2}, s31[2] = {3, 1}, s12[2] = {1, 2};
        tt *w1 = add_lt(f, key, "lokr_w1", "F32", 2, s22);
        tt *a = add_lt(f, key, "lokr_w2_a", "F32", 2, s31), *b = add_lt(f, key, "lokr_w2_b", "F32", 2, s12);
        add_alpha(f, key, 2);
        double w2[6] = {0};
        lowrank(w2, a->v, b->v, 3, 1, 2, 1);
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++)
                for (int p = 0; p < 2; p++)
                    for (int q = 0; q < 2; q++)
                        f->want[M_LOKR][(i * 3 + j) * 4 + p * 2 + q] +=
                            SCALE * 2.0 * w1->v[i * 2 + p] * w2[j * 2 + q];
    }
    /* a module naming nothing in the model, and a key that is no LoRA part */
    {
        int64_t s[2] = {1, 4}, u[2] = {4, 1};
        add_lt(f, "lora_unet_down_blocks_9_attentions_0_proj_in", "lora_down.weight", "F32", 2, s);
        add_lt(f, "lora_unet_down_blocks_9_attentions_0_proj_in", "lora_up.weight", "F32", 2, u);
        int64_t one = 1;
        add_lt(f, "stray", "key", "F32", 1, &one);
    }
    write_st(f->lora, f->lt, f->nl);
}

static void teardown(fx *f) {
    for (size_t i = 0; i < f->nl; i++) {
        free((char *)f->lt[i].name);
        free(f->lt[i].v);
    }
    for (int i = 0; i < M_N; i++) free(f->want[i]);
    tu_tmpdir_rm(f->dir);
    free(f->model);
    free(f->lora);
}

static tl_model *open_w(const char *path, bool writable) {
    tl_model_options o;
    tl_model_options_init(&o);
    o.writable = writable;
    tl_model *m = NULL;
    assert_int_equal(tl_model_open(&path, 1, &o, &m), TL_OK);
    return m;
}

static void test_every_style_and_dtype(void **state) {
    (void)state;
    fx f;
    setup(&f);
    tl_model *m = open_w(f.model, true);
    tl_lora *l = NULL;
    assert_int_equal(tl_lora_open(f.lora, &l), TL_OK);
    assert_int_equal(tl_lora_module_count(l), N_PLAIN + 3);
    tl_lora_report r;
    assert_int_equal(tl_lora_apply(m, l, (float)SCALE, &r, sizeof r), TL_OK);
    assert_int_equal(r.n_matched, N_PLAIN + 2);
    assert_int_equal(r.n_unmatched, 2);
    bool saw_module = false, saw_key = false;
    for (size_t i = 0; i < r.n_unmatched; i++) {
        if (!strcmp(r.unmatched[i], "lora_unet_down_blocks_9_attentions_0_proj_in")) saw_module = true;
        if (!strcmp(r.unmatched[i], "stray.key")) saw_key = true;
    }
    assert_true(saw_module && saw_key);
    for (int i = 0; i < M_N; i++) {
        expect_values(m, model_t[i].name, model_t[i].dtype, f.want[i], numel(&model_t[i]));
        assert_true(tl_model_tensor_patched(m, (size_t)tl_model_find(m, model_t[i].name)));
    }
    tl_lora_close(l);
    tl_model_close(m);
    teardown(&f);
}

/*
 * Modules large enough to be cut into column tiles (1100 and 1110 columns: more than one tile, a
 * tail that is no multiple of a vector) and have their rows split over threads: plain (F16),
 * LoHa (BF16) and LoKr (F32, kron with 111-column w2), merged with TIERLOAD_MERGE_THREADS 1, 2, 3
 * and 7; every count gives the values computed here. Then, at a scale that makes every sum round,
 * the merged bytes of 1 and 5 threads are the same. Both ways of merging: tl_lora_apply (every
 * module checked, then written) and tl_lora_apply_module (checked and written in one call).
 */
static void test_large_modules_any_thread_count(void **state) {
    (void)state;
    enum { O = 130, K = 1100, R = 8, H = 4, KO = 260, KK = 1110 };
    char *dir = tu_tmpdir(), *mp = tu_path(dir, "big.safetensors"),
         *lp = tu_path(dir, "big-lora.safetensors");
    seed_state = 777;
    tt w[3] = {{"big.plain.weight", "F16", 2, {O, K}, NULL},
               {"big.loha.weight", "BF16", 2, {O, K}, NULL},
               {"big.lokr.weight", "F32", 2, {KO, KK}, NULL}};
    for (int i = 0; i < 3; i++) fill(&w[i]);
    tt lt[12] = {
        {"big.plain.lora_down.weight", "F32", 2, {R, K}, NULL},
        {"big.plain.lora_up.weight", "F16", 2, {O, R}, NULL},
        {"big.plain.alpha", "F32", 1, {1}, NULL},
        {"big.loha.hada_w1_a", "F32", 2, {O, H}, NULL},
        {"big.loha.hada_w1_b", "BF16", 2, {H, K}, NULL},
        {"big.loha.hada_w2_a", "F16", 2, {O, H}, NULL},
        {"big.loha.hada_w2_b", "F32", 2, {H, K}, NULL},
        {"big.loha.alpha", "F32", 1, {1}, NULL},
        {"big.lokr.lokr_w1", "F32", 2, {20, 10}, NULL},
        {"big.lokr.lokr_w2", "F32", 2, {13, 111}, NULL},
    };
    for (int i = 0; i < 10; i++) fill(&lt[i]);
    lt[2].v[0] = R;     /* alpha / rank = 1 */
    lt[7].v[0] = 2 * H; /* alpha / rank = 2 */
    write_st(mp, w, 3);
    write_st(lp, lt, 10);
    double *want[3];
    for (int i = 0; i < 3; i++) {
        want[i] = malloc(numel(&w[i]) * sizeof(double));
        memcpy(want[i], w[i].v, numel(&w[i]) * sizeof(double));
    }
    lowrank(want[0], lt[1].v, lt[0].v, O, R, K, SCALE);
    {
        double *p1 = calloc(O * K, sizeof(double)), *p2 = calloc(O * K, sizeof(double));
        lowrank(p1, lt[3].v, lt[4].v, O, H, K, 1);
        lowrank(p2, lt[5].v, lt[6].v, O, H, K, 1);
        for (int i = 0; i < O * K; i++) want[1][i] += SCALE * 2 * p1[i] * p2[i];
        free(p1);
        free(p2);
    }
    for (int i = 0; i < 20; i++)
        for (int j = 0; j < 13; j++)
            for (int p = 0; p < 10; p++)
                for (int q = 0; q < 111; q++)
                    want[2][(i * 13 + j) * KK + p * 111 + q] +=
                        SCALE * lt[8].v[i * 10 + p] * lt[9].v[j * 111 + q];
    static const char *counts[] = {"1", "2", "3", "7"};
    for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
        assert_int_equal(setenv("TIERLOAD_MERGE_THREADS", counts[c], 1), 0);
        tl_model *m = open_w(mp, true);
        tl_lora *l = NULL;
        assert_int_equal(tl_lora_open(lp, &l), TL_OK);
        if (c % 2 == 0) { /* every module checked, then every one written */
            tl_lora_report r;
            assert_int_equal(tl_lora_apply(m, l, (float)SCALE, &r, sizeof r), TL_OK);
            assert_int_equal(r.n_matched, 3);
        } else { /* module by module, each checked and written in one call (tierload merge) */
            size_t tg[3];
            assert_int_equal(tl_lora_module_count(l), 3);
            assert_int_equal(tl_lora_targets(m, l, tg), TL_OK);
            for (size_t k = 0; k < 3; k++)
                assert_int_equal(tl_lora_apply_module(m, l, k, tg[k], (float)SCALE), TL_OK);
        }
        for (int i = 0; i < 3; i++) expect_values(m, w[i].name, w[i].dtype, want[i], numel(&w[i]));
        tl_lora_close(l);
        tl_model_close(m);
    }
    /* scale 0.3: sums round in F32; the bytes must not depend on the thread count */
    unsigned char *first[3] = {0};
    static const char *two[] = {"1", "5"};
    for (int c = 0; c < 2; c++) {
        assert_int_equal(setenv("TIERLOAD_MERGE_THREADS", two[c], 1), 0);
        tl_model *m = open_w(mp, true);
        tl_lora *l = NULL;
        assert_int_equal(tl_lora_open(lp, &l), TL_OK);
        if (c == 0) {
            assert_int_equal(tl_lora_apply(m, l, 0.3f, NULL, 0), TL_OK);
        } else {
            size_t tg[3];
            assert_int_equal(tl_lora_targets(m, l, tg), TL_OK);
            for (size_t k = 0; k < 3; k++)
                assert_int_equal(tl_lora_apply_module(m, l, k, tg[k], 0.3f), TL_OK);
        }
        for (int i = 0; i < 3; i++) {
            size_t t = tl_model_find(m, w[i].name);
            size_t nb = (size_t)tl_model_tensor(m, t)->nbytes;
            const unsigned char *p = tl_model_tensor_data(m, t);
            if (!c) {
                first[i] = malloc(nb);
                memcpy(first[i], p, nb);
            } else {
                assert_memory_equal(first[i], p, nb);
            }
        }
        tl_lora_close(l);
        tl_model_close(m);
    }
    unsetenv("TIERLOAD_MERGE_THREADS");
    for (int i = 0; i < 3; i++) free(first[i]), free(want[i]), free(w[i].v);
    for (int i = 0; i < 10; i++) free(lt[i].v);
    tu_tmpdir_rm(dir);
    free(mp);
    free(lp);
}

static void test_read_only_model_refused(void **state) {
    (void)state;
    fx f;
    setup(&f);
    tl_model *m = open_w(f.model, false);
    tl_lora *l = NULL;
    assert_int_equal(tl_lora_open(f.lora, &l), TL_OK);
    assert_int_equal(tl_lora_apply(m, l, 1.0f, NULL, 0), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "writable"));
    tl_lora_close(l);
    tl_model_close(m);
    teardown(&f);
}

static void test_quantized_weight_is_an_error(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *mp = tu_path(dir, "q.gguf"), *lp = tu_path(dir, "q.safetensors");
    gw_gguf *g = gw_new(3);
    int64_t ne[2] = {32, 2}; /* ggml order: shape [2, 32] */
    size_t qi = gw_tensor(g, "model.diffusion_model.input_blocks.1.1.proj_in.weight", 8 /* Q8_0 */, 2, ne);
    int64_t ne2[2] = {32, 2};
    gw_tensor(g, "model.diffusion_model.input_blocks.2.1.proj_in.weight", 0 /* F32 */, 2, ne2);
    (void)qi;
    assert_true(gw_write_file(g, mp));
    gw_free(g);
    tt ts[4] = {
        {"lora_unet_down_blocks_0_attentions_1_proj_in.lora_down.weight", "F32", 2, {1, 32}, NULL},
        {"lora_unet_down_blocks_0_attentions_1_proj_in.lora_up.weight", "F32", 2, {2, 1}, NULL},
        {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "F32", 2, {1, 32}, NULL},
        {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", "F32", 2, {2, 1}, NULL},
    };
    for (int i = 0; i < 4; i++) fill(&ts[i]);
    write_st(lp, ts, 4);
    tl_model *m = open_w(mp, true);
    unsigned char *before = malloc(8 * 32);
    memcpy(before, tl_model_tensor_data(m, 1), 8 * 32);
    tl_lora *l = NULL;
    assert_int_equal(tl_lora_open(lp, &l), TL_OK);
    assert_int_equal(tl_lora_apply(m, l, 1.0f, NULL, 0), TL_ERR_UNSUPPORTED);
    assert_non_null(strstr(tl_last_error(), "model.diffusion_model.input_blocks.1.1.proj_in.weight"));
    assert_non_null(strstr(tl_last_error(), "Q8_0"));
    /* checked before any byte changed: the F32 neighbour is untouched too */
    assert_false(tl_model_tensor_patched(m, 0));
    assert_false(tl_model_tensor_patched(m, 1));
    assert_memory_equal(before, tl_model_tensor_data(m, 1), 8 * 32);
    free(before);
    tl_lora_close(l);
    tl_model_close(m);
    for (int i = 0; i < 4; i++) free(ts[i].v);
    tu_tmpdir_rm(dir);
    free(mp);
    free(lp);
}

static void test_shape_mismatch_is_an_error(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *mp = tu_path(dir, "m.safetensors"), *lp = tu_path(dir, "l.safetensors");
    tt w = {"te.text_model.encoder.layers.0.mlp.fc1.weight", "F32", 2, {4, 6}, NULL};
    fill(&w);
    write_st(mp, &w, 1);
    tt ts[2] = {
        {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", "F32", 2, {2, 5}, NULL},
        {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", "F32", 2, {4, 2}, NULL},
    };
    fill(&ts[0]);
    fill(&ts[1]);
    write_st(lp, ts, 2);
    tl_model *m = open_w(mp, true);
    tl_lora *l = NULL;
    assert_int_equal(tl_lora_open(lp, &l), TL_OK);
    tl_lora_report r;
    assert_int_equal(tl_lora_match(m, l, &r, sizeof r), TL_OK);
    assert_int_equal(r.n_matched, 1); /* the kohya te1 name finds the tensor */
    assert_int_equal(tl_lora_apply(m, l, 1.0f, NULL, 0), TL_ERR_FORMAT);
    assert_non_null(strstr(tl_last_error(), "te.text_model.encoder.layers.0.mlp.fc1.weight"));
    assert_false(tl_model_tensor_patched(m, 0));
    tl_lora_close(l);
    tl_model_close(m);
    free(w.v), free(ts[0].v), free(ts[1].v);
    tu_tmpdir_rm(dir);
    free(mp);
    free(lp);
}

/* A second LoRA in the model's own naming on two tensors the first one touches too. */
static char *second_lora(fx *f, tt *ts) {
    char *p = tu_path(f->dir, "second.safetensors");
    ts[0] = (tt){"model.diffusion_model.input_blocks.1.1.proj_in.lora_A.weight", "F32", 2, {2, 6}, NULL};
    ts[1] = (tt){"model.diffusion_model.input_blocks.1.1.proj_in.lora_B.weight", "F32", 2, {4, 2}, NULL};
    ts[2] = (tt){"model.diffusion_model.middle_block.1.proj_out.lora_A.weight", "BF16", 2, {1, 4}, NULL};
    ts[3] = (tt){"model.diffusion_model.middle_block.1.proj_out.lora_B.weight", "F16", 2, {4, 1}, NULL};
    for (int i = 0; i < 4; i++) fill(&ts[i]);
    write_st(p, ts, 4);
    return p;
}

static void file_state(const char *path, struct stat *st, unsigned char **bytes, size_t *len) {
    assert_int_equal(stat(path, st), 0);
    *bytes = (unsigned char *)tu_read_file(path, len);
}

static void test_set_remove_and_rescale(void **state) {
    (void)state;
    fx f;
    setup(&f);
    tt s2[4];
    char *p2 = second_lora(&f, s2);
    struct stat st0, st1;
    unsigned char *b0, *b1;
    size_t len0, len1;
    file_state(f.model, &st0, &b0, &len0);

    tl_model *m = open_w(f.model, true);
    tl_lora *l1 = NULL, *l2 = NULL;
    assert_int_equal(tl_lora_open(f.lora, &l1), TL_OK);
    assert_int_equal(tl_lora_open(p2, &l2), TL_OK);
    tl_lora_set *set = NULL;
    assert_int_equal(tl_lora_set_create(m, NULL, &set), TL_OK);
    assert_int_equal(tl_lora_set_add(set, l1, (float)SCALE, NULL, 0), TL_OK);
    assert_int_equal(tl_lora_set_add(set, l2, 1.0f, NULL, 0), TL_OK);

    /* reference: a fresh model with only l2 merged */
    tl_model *ref = open_w(f.model, true);
    assert_int_equal(tl_lora_apply(ref, l2, 1.0f, NULL, 0), TL_OK);

    assert_int_equal(tl_lora_set_remove(set, l1), TL_OK);
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *ti = tl_model_tensor(m, i);
        assert_memory_equal(tl_model_tensor_data(m, i), tl_model_tensor_data(ref, i), ti->nbytes);
        /* tensors only l1 touched are clean again: the file's own bytes */
        bool l2_touches = strstr(ti->name, "input_blocks.1.1.proj_in") || strstr(ti->name, "middle_block.1");
        assert_int_equal(tl_model_tensor_patched(m, i), l2_touches);
        if (!l2_touches) assert_memory_equal(tl_model_tensor_data(m, i), b0 + ti->offset, ti->nbytes);
    }
    tl_model_close(ref);

    /* rescale l2 to 0.5: equal to a fresh merge at 0.5 */
    assert_int_equal(tl_lora_set_scale(set, l2, 0.5f), TL_OK);
    ref = open_w(f.model, true);
    assert_int_equal(tl_lora_apply(ref, l2, 0.5f, NULL, 0), TL_OK);
    for (size_t i = 0; i < tl_model_tensor_count(m); i++)
        assert_memory_equal(tl_model_tensor_data(m, i), tl_model_tensor_data(ref, i),
                            tl_model_tensor(m, i)->nbytes);
    tl_model_close(ref);

    /* remove the last: every byte is the file's again, nothing patched */
    assert_int_equal(tl_lora_set_remove(set, l2), TL_OK);
    assert_int_equal(tl_lora_set_remove(set, l2), TL_ERR_NOT_FOUND);
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *ti = tl_model_tensor(m, i);
        assert_false(tl_model_tensor_patched(m, i));
        assert_memory_equal(tl_model_tensor_data(m, i), b0 + ti->offset, ti->nbytes);
    }
    tl_lora_set_destroy(set);
    tl_lora_close(l1);
    tl_lora_close(l2);
    tl_model_close(m);
    /* the model file never changed: bytes and mtime */
    file_state(f.model, &st1, &b1, &len1);
    assert_int_equal(len0, len1);
    assert_memory_equal(b0, b1, len0);
    assert_int_equal(st0.st_mtim.tv_sec, st1.st_mtim.tv_sec);
    assert_int_equal(st0.st_mtim.tv_nsec, st1.st_mtim.tv_nsec);
    free(b0);
    free(b1);
    for (int i = 0; i < 4; i++) free(s2[i].v);
    free(p2);
    teardown(&f);
}

/* ---- a session: merged bytes reach the device, acquired tensors refuse ---- */

static void test_session_reloads_merged(void **state) {
    (void)state;
    fx f;
    setup(&f);
    tl_model *m = open_w(f.model, true);
    assert_int_equal(tl_device_sim_add("loratest=1M"), TL_OK);
    tl_device *sim = NULL;
    assert_int_equal(tl_device_find("loratest", &sim), TL_OK);
    tl_plan_summary sum;
    assert_int_equal(tl_plan_summary_from_model(m, TL_DTYPE_INVALID, &sum), TL_OK);
    tl_plan_device devs[2];
    memset(devs, 0, sizeof devs);
    snprintf(devs[0].name, sizeof devs[0].name, "loratest");
    devs[0].is_gpu = true;
    devs[0].total = devs[0].free = 1 << 20;
    snprintf(devs[1].name, sizeof devs[1].name, "cpu");
    tl_plan_options po;
    tl_plan_options_init(&po);
    po.reserve = "diffusion=0,cond=0,vae=0,controlnet=0";
    tl_plan *p = NULL;
    assert_int_equal(tl_plan_create(&sum, devs, 2, &po, &p), TL_OK);
    tl_plan_summary_clear(&sum);
    tl_session *s = NULL;
    assert_int_equal(tl_session_create(m, p, NULL, &s), TL_OK);

    /* load the diffusion model once with the file's bytes */
    tl_acquired *a = NULL;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a), TL_OK);
    tl_lora *l = NULL;
    assert_int_equal(tl_lora_open(f.lora, &l), TL_OK);
    tl_lora_set *set = NULL;
    assert_int_equal(tl_lora_set_create(m, s, &set), TL_OK);
    /* acquired: refused before any byte changes */
    assert_int_equal(tl_lora_set_add(set, l, (float)SCALE, NULL, 0), TL_ERR_INVALID_ARG);
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) assert_false(tl_model_tensor_patched(m, i));
    tl_session_release(s, a);
    assert_int_equal(tl_lora_set_add(set, l, (float)SCALE, NULL, 0), TL_OK);

    /* acquire again: every part's bytes on the device are the merged ones */
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a), TL_OK);
    for (size_t k = 0; k < tl_acquired_count(a); k++) {
        const tl_session_tensor *t = tl_acquired_tensor(a, k);
        for (uint32_t q = 0; q < t->n_parts; q++) {
            const tl_session_part *pt = &t->parts[q];
            unsigned char *buf = malloc(pt->nbytes);
            if (pt->host)
                memcpy(buf, pt->host, pt->nbytes);
            else
                assert_int_equal(tl_device_copy_from(pt->device, buf, pt->dptr, pt->nbytes), TL_OK);
            assert_memory_equal(buf, (const unsigned char *)tl_model_tensor_data(m, t->index) + pt->offset,
                                pt->nbytes);
            free(buf);
        }
    }
    for (int i = 0; i < M_N; i++)
        expect_values(m, model_t[i].name, model_t[i].dtype, f.want[i], numel(&model_t[i]));
    tl_session_release(s, a);
    /* removal while not acquired: back to the file's bytes on the device too */
    assert_int_equal(tl_lora_set_remove(set, l), TL_OK);
    assert_int_equal(tl_session_check(s), TL_OK);
    tl_lora_set_destroy(set);
    tl_lora_close(l);
    tl_session_destroy(s);
    tl_plan_destroy(p);
    tl_device_unregister(sim);
    tl_model_close(m);
    teardown(&f);
}

/* llama.cpp's GGUF adapter: "<tensor>.weight.lora_a/.lora_b", alpha in the metadata */
static void test_gguf_adapter(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *mp = tu_path(dir, "m.gguf"), *lp = tu_path(dir, "a.gguf");
    float w[32], down[16], up[8];
    for (int i = 0; i < 32; i++) w[i] = (float)rnd8();
    for (int i = 0; i < 16; i++) down[i] = (float)rnd8();
    for (int i = 0; i < 8; i++) up[i] = (float)rnd8();
    gw_gguf *g = gw_new(3);
    int64_t ne_w[2] = {8, 4}; /* ggml order: shape [4, 8] */
    size_t ti = gw_tensor(g, "blk.0.attn_q.weight", 0, 2, ne_w);
    gw_tensor_data(g, ti, w, sizeof w);
    assert_true(gw_write_file(g, mp));
    gw_free(g);
    g = gw_new(3);
    gw_kv_str(g, "general.type", "adapter");
    gw_kv_f32(g, "adapter.lora.alpha", 1.0f);
    int64_t ne_a[2] = {8, 2}, ne_b[2] = {2, 4}; /* shapes [2, 8] (down) and [4, 2] (up) */
    size_t ia = gw_tensor(g, "blk.0.attn_q.weight.lora_a", 0, 2, ne_a);
    size_t ib = gw_tensor(g, "blk.0.attn_q.weight.lora_b", 0, 2, ne_b);
    gw_tensor_data(g, ia, down, sizeof down);
    gw_tensor_data(g, ib, up, sizeof up);
    assert_true(gw_write_file(g, lp));
    gw_free(g);
    double want[32], wd[32], ud[8], dd[16];
    for (int i = 0; i < 32; i++) want[i] = wd[i] = w[i];
    for (int i = 0; i < 8; i++) ud[i] = up[i];
    for (int i = 0; i < 16; i++) dd[i] = down[i];
    lowrank(want, ud, dd, 4, 2, 8, 2.0 * 1.0 / 2); /* scale 2, alpha 1 / rank 2 */
    (void)wd;
    tl_model *m = open_w(mp, true);
    tl_lora *l = NULL;
    assert_int_equal(tl_lora_open(lp, &l), TL_OK);
    tl_lora_report r;
    assert_int_equal(tl_lora_apply(m, l, 2.0f, &r, sizeof r), TL_OK);
    assert_int_equal(r.n_matched, 1);
    assert_int_equal(r.n_unmatched, 0);
    expect_values(m, "blk.0.attn_q.weight", "F32", want, 32);
    tl_lora_close(l);
    tl_model_close(m);
    free(mp);
    free(lp);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_style_and_dtype),
        cmocka_unit_test(test_large_modules_any_thread_count),
        cmocka_unit_test(test_read_only_model_refused),
        cmocka_unit_test(test_quantized_weight_is_an_error),
        cmocka_unit_test(test_shape_mismatch_is_an_error),
        cmocka_unit_test(test_set_remove_and_rescale),
        cmocka_unit_test(test_session_reloads_merged),
        cmocka_unit_test(test_gguf_adapter),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    for (int i = 0; i < M_N; i++) free(model_t[i].v);
    return rc;
}
