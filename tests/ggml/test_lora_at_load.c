/*
 * test_lora_at_load.c — LoRA sets applied as a session's units load
 * (tl_lora_set_create_at_load) on a read-only model: F32 / F16 / BF16
 * weights come out bit for bit as tl_lora_apply of the same LoRAs in the same
 * order on a writable copy (on a sim GPU, on ggml:CPU's own memory, split by
 * rows over two sims); Q8_0 / Q4_0 weights are ggml's quantizer of that F32
 * merge (or its F16 rounding with TL_LORA_QUANT_AS_F16), the reported error
 * the largest difference measured here; a rescale reloads exactly the
 * touched units (stats and event log); streaming a LoRA'd model adds no
 * private memory beyond the units resident on the device (RSS measured);
 * a target of another quantized type is refused before any load.
 */
#include "devices/ggml_dl.h"
#include "gguf_writer.h"
#include "rpc_server.h"
#include "st_writer.h"
#include "testutil.h"

#include "ggml.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <time.h>

#define UNET "model.diffusion_model."

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#else
#define SANITIZED TU_UNDER_TSAN
#endif

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float rnd(void) { /* in [-1, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)(rng >> 40) / (float)(1 << 23) - 1.0f;
}

typedef struct wt {
    const char *name;
    tl_dtype dt; /* F32, F16 or BF16 in safetensors files */
    int64_t rows, cols;
} wt;

static const char *st_name(tl_dtype t) {
    return t == TL_DTYPE_F32 ? "F32" : t == TL_DTYPE_F16 ? "F16" : "BF16";
}

static void put(tl_dtype t, const float *x, void *out, int64_t n) {
    if (t == TL_DTYPE_F32)
        memcpy(out, x, (size_t)n * 4);
    else if (t == TL_DTYPE_F16)
        ggml_fp32_to_fp16_row(x, out, n);
    else
        ggml_fp32_to_bf16_row_ref(x, out, n);
}

/*
 * A safetensors file of tensors ts, values from vals[i] (NULL: random in
 * [-1, 1)), each scaled by mul.
 */
static void write_st(const char *path, const wt *ts, size_t n, float *const *vals, float mul) {
    sw_tensor sw[16] = {0};
    for (size_t i = 0; i < n; i++)
        sw[i] = (sw_tensor){ts[i].name, st_name(ts[i].dt), 2, {ts[i].rows, ts[i].cols}};
    size_t len;
    uint8_t *img = sw_build(sw, n, NULL, true, &len);
    assert_true(sw_write_file(path, img, len));
    tl_model *m;
    assert_int_equal(tl_model_open(&path, 1, NULL, &m), TL_OK);
    for (size_t i = 0; i < n; i++) {
        const tl_tensor_info *t = tl_model_tensor(m, tl_model_find(m, ts[i].name));
        float *x = malloc(t->n_elements * sizeof *x);
        for (uint64_t k = 0; k < t->n_elements; k++)
            x[k] = (vals && vals[i] ? vals[i][k] : rnd()) * mul;
        put(ts[i].dt, x, img + t->offset, (int64_t)t->n_elements);
        free(x);
    }
    tl_model_close(m);
    assert_true(sw_write_file(path, img, len));
    free(img);
}

/* A LoRA file with one plain module (rank r, alpha 2r... given) for each target. */
static void write_lora(const char *path, const wt *targets, size_t n, int64_t r) {
    wt ts[16];
    char names[16][160];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t base = strlen(targets[i].name) - strlen(".weight");
        snprintf(names[k], sizeof names[k], "%.*s.lora_down.weight", (int)base, targets[i].name);
        ts[k] = (wt){names[k], TL_DTYPE_F32, r, targets[i].cols};
        k++;
        snprintf(names[k], sizeof names[k], "%.*s.lora_up.weight", (int)base, targets[i].name);
        ts[k] = (wt){names[k], TL_DTYPE_F16, targets[i].rows, r};
        k++;
    }
    write_st(path, ts, k, NULL, 0.25f);
}

static tl_model *open_m(const char *path, bool writable) {
    tl_model_options o;
    tl_model_options_init(&o);
    o.writable = writable;
    tl_model *m = NULL;
    assert_int_equal(tl_model_open(&path, 1, &o, &m), TL_OK);
    return m;
}

static tl_plan *plan(tl_model *m, const char *const *gpus, size_t n, uint64_t budget,
                     bool offload) {
    tl_plan_summary sum;
    assert_int_equal(tl_plan_summary_from_model(m, TL_DTYPE_INVALID, &sum), TL_OK);
    tl_plan *p = tu_plan_gpus(&sum, gpus, n, budget, NULL, offload);
    tl_plan_summary_clear(&sum);
    return p;
}

/* Tensor t of acquired set a, all parts, into a malloc'd buffer. */
static unsigned char *read_back(const tl_acquired *a, size_t t) {
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *st = tl_acquired_tensor(a, i);
        if (st->index != t) continue;
        unsigned char *b = malloc(st->info->nbytes);
        for (uint32_t q = 0; q < st->n_parts; q++) {
            const tl_session_part *p = &st->parts[q];
            if (p->tier == TL_TIER_DEVICE)
                assert_int_equal(tl_device_copy_from(p->device, b + p->offset, p->dptr, p->nbytes),
                                 TL_OK);
            else
                memcpy(b + p->offset, p->host, p->nbytes);
        }
        return b;
    }
    fail_msg("tensor %zu not acquired", t);
    return NULL;
}

static size_t count_loads(const tl_session *s, uint64_t from) {
    tl_session_event ev[256];
    size_t n = tl_session_events_copy(s, from, ev, 256, sizeof ev[0], NULL, 0), c = 0;
    for (size_t i = 0; i < n; i++)
        c += ev[i].kind == TL_EVENT_LOAD;
    return c;
}

static uint64_t log_next(const tl_session *s) {
    tl_session_log lg;
    tl_session_events_copy(s, 0, NULL, 0, sizeof(tl_session_event), &lg, sizeof lg);
    return lg.next;
}

static const wt float_ts[] = {
    {UNET "input_blocks.0.0.a.weight", TL_DTYPE_F32, 256, 256},
    {UNET "input_blocks.0.0.b.weight", TL_DTYPE_F16, 256, 256},
    {UNET "input_blocks.1.0.c.weight", TL_DTYPE_BF16, 256, 256},
    {UNET "input_blocks.1.0.d.weight", TL_DTYPE_F32, 64, 64},
};
#define N_FLOAT 4

/*
 * F32 / F16 / BF16: the same bytes as tl_lora_apply of L1 (x 0.8) then L2
 * (x -0.6) on a writable copy, on each kind of device; then L2 rescaled to
 * 1.3 reloads exactly its two tensors' units.
 */
static void test_float_bit_for_bit(void **state) {
    (void)state;
    TU_NEED_GGML();
    char *dir = tu_tmpdir(), *mp = tu_path(dir, "m.safetensors"), *l1p = tu_path(dir, "l1.st"),
         *l2p = tu_path(dir, "l2.st");
    write_st(mp, float_ts, N_FLOAT, NULL, 1.0f);
    write_lora(l1p, float_ts, 3, 4);               /* a, b, c */
    wt l2t[] = {float_ts[0], float_ts[2]};           /* a, c */
    write_lora(l2p, l2t, 2, 2);
    tl_lora *l1, *l2;
    assert_int_equal(tl_lora_open(l1p, &l1), TL_OK);
    assert_int_equal(tl_lora_open(l2p, &l2), TL_OK);
    /* the expected bytes: eager merges on a writable model, and again with L2 rescaled */
    tl_model *w = open_m(mp, true);
    unsigned char *want[2][N_FLOAT];
    for (int v = 0; v < 2; v++) {
        tl_lora_set *es;
        assert_int_equal(tl_lora_set_create(w, NULL, &es), TL_OK);
        assert_int_equal(tl_lora_set_add(es, l1, 0.8f, NULL, 0), TL_OK);
        assert_int_equal(tl_lora_set_add(es, l2, v ? 1.3f : -0.6f, NULL, 0), TL_OK);
        for (size_t i = 0; i < N_FLOAT; i++) {
            const tl_tensor_info *t = tl_model_tensor(w, i);
            want[v][i] = malloc(t->nbytes);
            memcpy(want[v][i], tl_model_tensor_data(w, i), t->nbytes);
        }
        for (size_t i = 0; i < N_FLOAT; i++)
            assert_int_equal(tl_model_tensor_unpatch(w, i), TL_OK);
        tl_lora_set_destroy(es);
    }
    tl_model_close(w);
    tl_device *s0 = tu_sim_add("lsim0", 64 << 20), *s1 = tu_sim_add("lsim1", 64 << 20);
    tl_model *m = open_m(mp, false); /* read-only: nothing is merged into it */
    const char *on[3][2] = {{"lsim0", NULL}, {"ggml:CPU", NULL}, {"lsim0", "lsim1"}};
    for (int c = 0; c < 3; c++) {
        size_t ng = on[c][1] ? 2 : 1;
        tl_plan *p = plan(m, on[c], ng, ng == 2 ? 300 << 10 : 32 << 20, false);
        tl_session *s;
        assert_int_equal(tl_session_create(m, p, NULL, &s), TL_OK);
        tl_lora_set *set;
        assert_int_equal(tl_lora_set_create_at_load(s, 0, &set), TL_OK);
        tl_lora_report r;
        assert_int_equal(tl_lora_set_add(set, l1, 0.8f, &r, sizeof r), TL_OK);
        assert_int_equal(r.n_matched, 3);
        assert_int_equal(tl_lora_set_add(set, l2, -0.6f, NULL, 0), TL_OK);
        for (int v = 0; v < 2; v++) {
            tl_acquired *a;
            uint64_t ev0 = log_next(s);
            tl_session_stats before;
            assert_int_equal(tl_session_stats_get(s, &before, sizeof before), TL_OK);
            if (tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a))
                fail_msg("%s: %s", on[c][0], tl_last_error());
            assert_int_equal(tl_session_check(s), TL_OK);
            size_t split = 0;
            for (size_t i = 0; i < N_FLOAT; i++) {
                const tl_tensor_info *t = tl_model_tensor(m, i);
                unsigned char *got = read_back(a, i);
                if (memcmp(got, want[v][i], t->nbytes))
                    fail_msg("%s (%s, round %d): %s differs from tl_lora_apply's bytes",
                             on[c][0], on[c][1] ? "row split" : "whole", v, t->name);
                free(got);
                assert_false(tl_model_tensor_patched(m, i));
            }
            for (size_t i = 0; i < tl_acquired_count(a); i++)
                split += tl_acquired_tensor(a, i)->n_parts > 1;
            if (ng == 2) assert_int_equal(split, 3);
            tl_session_stats st;
            assert_int_equal(tl_session_stats_get(s, &st, sizeof st), TL_OK);
            /* units of a, c (x2 with the split): round 1 loads only those again */
            uint64_t ac = ng == 2 ? 4 : 2, abc = ng == 2 ? 6 : 3;
            if (v == 0) {
                assert_int_equal(st.lora_loads, abc);
                assert_int_equal(st.lora_reloads, 0);
            } else {
                assert_int_equal(st.loads - before.loads, ac);
                assert_int_equal(st.lora_loads - before.lora_loads, ac);
                assert_int_equal(st.lora_reloads, ac);
                assert_int_equal(count_loads(s, ev0), ac);
            }
            assert_int_equal(tl_session_release(s, a), TL_OK);
            if (v == 0) { /* mid-run: L2's tensors (a, c) dropped at once, the rest stays */
                assert_int_equal(tl_lora_set_scale(set, l2, 1.3f), TL_OK);
                assert_int_equal(tl_session_check(s), TL_OK);
            }
        }
        /* refused while one of its tensors is acquired, as for merged sets */
        tl_acquired *a;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 1, false, &a), TL_OK);
        assert_int_equal(tl_lora_set_scale(set, l1, 0.5f), TL_ERR_INVALID_ARG);
        assert_int_equal(tl_session_release(s, a), TL_OK);
        tl_lora_set_destroy(set);
        assert_int_equal(tl_session_check(s), TL_OK);
        /* without the set: the file's bytes again */
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a),
                         TL_OK);
        for (size_t i = 0; i < N_FLOAT; i++) {
            const tl_tensor_info *t = tl_model_tensor(m, i);
            unsigned char *got = read_back(a, i);
            assert_memory_equal(got, tl_model_tensor_data(m, i), t->nbytes);
            free(got);
        }
        assert_int_equal(tl_session_release(s, a), TL_OK);
        assert_int_equal(tl_session_destroy(s), TL_OK);
        tl_plan_destroy(p);
    }
    for (int v = 0; v < 2; v++)
        for (size_t i = 0; i < N_FLOAT; i++)
            free(want[v][i]);
    tl_model_close(m);
    tl_lora_close(l1);
    tl_lora_close(l2);
    tl_device_unregister(s0);
    tl_device_unregister(s1);
    tl_device_release(s0);
    tl_device_release(s1);
    tu_tmpdir_rm(dir);
    free(mp);
    free(l1p);
    free(l2p);
}

/*
 * Q8_0 / Q4_0 weights: the F32 merge (tl_lora_apply on an F32 model holding
 * the dequantized values) quantized by ggml, and the error reported the
 * largest |dequantized - merged| computed here; with TL_LORA_QUANT_AS_F16, the
 * merge rounded to F16. A Q4_K target is refused before anything loads.
 */
static void test_quantized(void **state) {
    (void)state;
    TU_NEED_GGML();
    char *dir = tu_tmpdir(), *qp = tu_path(dir, "q.gguf"), *fp = tu_path(dir, "f.safetensors"),
         *lp = tu_path(dir, "l.st"), *kp = tu_path(dir, "k.gguf");
    const enum ggml_type gts[2] = {GGML_TYPE_Q8_0, GGML_TYPE_Q4_0};
    const char *names[2] = {UNET "input_blocks.0.0.q8.weight", UNET "input_blocks.0.0.q4.weight"};
    const int64_t R = 128, K = 256;
    float *deq[2];
    gw_gguf *g = gw_new(3);
    for (int i = 0; i < 2; i++) {
        float *x = malloc((size_t)(R * K) * sizeof *x);
        for (int64_t k = 0; k < R * K; k++)
            x[k] = rnd();
        size_t qn = ggml_row_size(gts[i], K) * (size_t)R;
        void *q = malloc(qn);
        ggml_quantize_chunk(gts[i], x, q, 0, R, K, NULL);
        deq[i] = malloc((size_t)(R * K) * sizeof(float));
        ggml_get_type_traits(gts[i])->to_float(q, deq[i], R * K);
        int64_t ne[2] = {K, R};
        size_t ti = gw_tensor(g, names[i], (uint32_t)gts[i], 2, ne);
        gw_tensor_data(g, ti, q, qn);
        free(q);
        free(x);
    }
    assert_true(gw_write_file(g, qp));
    gw_free(g);
    wt fts[2] = {{names[0], TL_DTYPE_F32, R, K}, {names[1], TL_DTYPE_F32, R, K}};
    write_st(fp, fts, 2, deq, 1.0f);
    write_lora(lp, fts, 2, 3);
    tl_lora *l;
    assert_int_equal(tl_lora_open(lp, &l), TL_OK);
    /* the F32 merge */
    tl_model *fm = open_m(fp, true);
    assert_int_equal(tl_lora_apply(fm, l, 0.9f, NULL, 0), TL_OK);
    tl_model *m = open_m(qp, false);
    tl_device *s0 = tu_sim_add("lsim2", 64 << 20);
    const char *g1[] = {"lsim2"};
    tl_plan *p = plan(m, g1, 1, 32 << 20, false);
    for (int f16 = 0; f16 < 2; f16++) {
        tl_session *s;
        assert_int_equal(tl_session_create(m, p, NULL, &s), TL_OK);
        tl_lora_set *set;
        assert_int_equal(tl_lora_set_create_at_load(s, f16 ? TL_LORA_QUANT_AS_F16 : 0, &set),
                         TL_OK);
        assert_int_equal(tl_lora_set_add(set, l, 0.9f, NULL, 0), TL_OK);
        tl_acquired *a;
        if (tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a))
            fail_msg("%s", tl_last_error());
        double worst = 0;
        for (int i = 0; i < 2; i++) {
            size_t ti = tl_model_find(m, names[i]);
            const float *merged = tl_model_tensor_data(fm, tl_model_find(fm, names[i]));
            unsigned char *got = read_back(a, ti);
            const tl_session_tensor *st = NULL;
            for (size_t j = 0; j < tl_acquired_count(a); j++)
                if (tl_acquired_tensor(a, j)->index == ti) st = tl_acquired_tensor(a, j);
            if (f16) {
                assert_int_equal(st->info->dtype, TL_DTYPE_F16);
                uint16_t *h = malloc((size_t)(R * K) * 2);
                ggml_fp32_to_fp16_row(merged, (ggml_fp16_t *)h, R * K);
                assert_memory_equal(got, h, (size_t)(R * K) * 2);
                free(h);
            } else {
                size_t qn = ggml_row_size(gts[i], K) * (size_t)R;
                assert_int_equal(st->info->nbytes, qn);
                void *q = malloc(qn);
                ggml_quantize_chunk(gts[i], merged, q, 0, R, K, NULL);
                if (memcmp(got, q, qn)) fail_msg("%s differs from ggml's quantizer", names[i]);
                float *back = malloc((size_t)(R * K) * sizeof *back);
                ggml_get_type_traits(gts[i])->to_float(q, back, R * K);
                for (int64_t k = 0; k < R * K; k++)
                    worst = fmax(worst, fabs((double)back[k] - (double)merged[k]));
                free(back);
                free(q);
            }
            free(got);
        }
        tl_session_stats ss;
        assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
        if (f16) {
            assert_true(ss.lora_max_error == 0);
        } else {
            assert_true(worst > 0);
            assert_true(ss.lora_max_error == worst);
        }
        assert_int_equal(tl_session_release(s, a), TL_OK);
        tl_lora_set_destroy(set);
        assert_int_equal(tl_session_destroy(s), TL_OK);
    }
    tl_plan_destroy(p);
    tl_model_close(m);
    tl_model_close(fm);
    /* Q4_K is not a type the set merges into: refused naming it, nothing loaded */
    g = gw_new(3);
    int64_t ne[2] = {256, 2};
    gw_tensor(g, UNET "input_blocks.0.0.q8.weight", TL_DTYPE_Q4_K, 2, ne);
    assert_true(gw_write_file(g, kp));
    gw_free(g);
    m = open_m(kp, false);
    p = plan(m, g1, 1, 32 << 20, false);
    tl_session *s;
    assert_int_equal(tl_session_create(m, p, NULL, &s), TL_OK);
    tl_lora_set *set;
    assert_int_equal(tl_lora_set_create_at_load(s, 0, &set), TL_OK);
    assert_int_equal(tl_lora_set_add(set, l, 0.9f, NULL, 0), TL_ERR_UNSUPPORTED);
    assert_non_null(strstr(tl_last_error(), "q8.weight"));
    assert_non_null(strstr(tl_last_error(), "Q4_K"));
    tl_session_stats ss;
    assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
    assert_int_equal(ss.loads, 0);
    tl_lora_set_destroy(set);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    tl_plan_destroy(p);
    tl_model_close(m);
    tl_lora_close(l);
    for (int i = 0; i < 2; i++)
        free(deq[i]);
    tl_device_unregister(s0);
    tl_device_release(s0);
    tu_tmpdir_rm(dir);
    free(qp);
    free(fp);
    free(lp);
    free(kp);
}

/*
 * Streaming a model whose every weight has a LoRA through a sim GPU with
 * room for two of its eight layers: the process's anonymous memory grows by
 * at most the units resident on the device (the sim's memory is the
 * process's) plus a small allowance for the allocator and the merge threads,
 * far below the 16 MiB an eager merge makes private; no tensor is patched.
 */
static void test_private_memory(void **state) {
    (void)state;
    TU_NEED_GGML();
    char *dir = tu_tmpdir(), *mp = tu_path(dir, "m.safetensors"), *lp = tu_path(dir, "l.st");
    wt ts[8];
    char names[8][96];
    for (int k = 0; k < 8; k++) {
        snprintf(names[k], sizeof names[k], UNET "input_blocks.%d.0.w.weight", k);
        ts[k] = (wt){names[k], TL_DTYPE_F16, 1024, 1024}; /* 2 MiB each */
    }
    write_st(mp, ts, 8, NULL, 1.0f);
    write_lora(lp, ts, 8, 8);
    tl_lora *l;
    assert_int_equal(tl_lora_open(lp, &l), TL_OK);
    tl_model *m = open_m(mp, false);
    tl_device *s0 = tu_sim_add("lsim3", 64 << 20);
    const char *g1[] = {"lsim3"};
    tl_plan *p = plan(m, g1, 1, 5 << 20, true); /* streamed: two layers fit */
    tl_session *s;
    assert_int_equal(tl_session_create(m, p, NULL, &s), TL_OK);
    tl_lora_set *set;
    assert_int_equal(tl_lora_set_create_at_load(s, 0, &set), TL_OK);
    assert_int_equal(tl_lora_set_add(set, l, 1.0f, NULL, 0), TL_OK);
    /* warm-up pass: allocator arenas and the merge threads' stacks exist from here on */
    for (int pass = 0; pass < 3; pass++) {
        tl_memstats m0;
        assert_int_equal(tl_memstats_read(&m0, sizeof m0), TL_OK);
        uint64_t grow = 0, used_max = 0;
        for (size_t k = 0; k < 8; k++) {
            tl_acquired *a;
            assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, k, k + 1, false, &a), TL_OK);
            tl_memstats m1;
            assert_int_equal(tl_memstats_read(&m1, sizeof m1), TL_OK);
            tl_session_stats ss;
            assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
            if (m1.rss_anon > m0.rss_anon && m1.rss_anon - m0.rss_anon > grow)
                grow = m1.rss_anon - m0.rss_anon;
            if (ss.devices[0].used > used_max) used_max = ss.devices[0].used;
            assert_int_equal(tl_session_release(s, a), TL_OK);
        }
        tl_session_stats ss;
        assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
        print_message("pass %d: anon growth %llu KiB, device bytes at most %llu KiB, "
                      "%llu units made\n",
                      pass, (unsigned long long)(grow >> 10), (unsigned long long)(used_max >> 10),
                      (unsigned long long)ss.lora_loads);
        assert_true(used_max <= 5u << 20);
        /* ASan's quarantine keeps freed device memory (sims allocate on the heap) and TSan's
           shadow is anonymous memory too: the bound holds in plain builds */
        if (pass > 0 && !SANITIZED) assert_true(grow <= used_max + (2u << 20));
    }
    for (size_t i = 0; i < 8; i++)
        assert_false(tl_model_tensor_patched(m, i));
    /* the measure sees private pages: an eager merge into a writable copy makes 16 MiB of them */
    tl_model *w = open_m(mp, true);
    tl_memstats e0, e1;
    assert_int_equal(tl_memstats_read(&e0, sizeof e0), TL_OK);
    assert_int_equal(tl_lora_apply(w, l, 1.0f, NULL, 0), TL_OK);
    assert_int_equal(tl_memstats_read(&e1, sizeof e1), TL_OK);
    print_message("eager merge: anon growth %llu KiB\n",
                  (unsigned long long)((e1.rss_anon - e0.rss_anon) >> 10));
    assert_true(e1.rss_anon >= e0.rss_anon + (15u << 20));
    tl_model_close(w);
    tl_lora_set_destroy(set);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    tl_plan_destroy(p);
    tl_model_close(m);
    tl_lora_close(l);
    tl_device_unregister(s0);
    tl_device_release(s0);
    tu_tmpdir_rm(dir);
    free(mp);
    free(lp);
}

typedef struct racer {
    tl_session *s;
    size_t layer;
    int rounds;
    int ok;
    atomic_bool done;
} racer;

static void *race(void *arg) {
    racer *r = arg;
    for (int i = 0; i < r->rounds; i++) {
        tl_acquired *a;
        if (tl_session_acquire_wait(r->s, TL_COMP_DIFFUSION, r->layer, r->layer + 1, false, 5000,
                                    &a) != TL_OK)
            continue;
        r->ok++;
        tl_session_release(r->s, a);
        usleep(500); /* a window for the rescales */
    }
    atomic_store(&r->done, true);
    return NULL;
}

/*
 * Threads acquiring the two layers while the set is rescaled again and again
 * (refused while a touched tensor is held): no race (TSan builds), the
 * budgets hold, and at the end the bytes are those of the last scale.
 */
static void test_concurrent_rescale(void **state) {
    (void)state;
    TU_NEED_GGML();
    char *dir = tu_tmpdir(), *mp = tu_path(dir, "m.safetensors"), *lp = tu_path(dir, "l.st");
    write_st(mp, float_ts, N_FLOAT, NULL, 1.0f);
    write_lora(lp, float_ts, 3, 4);
    tl_lora *l;
    assert_int_equal(tl_lora_open(lp, &l), TL_OK);
    tl_model *w = open_m(mp, true);
    assert_int_equal(tl_lora_apply(w, l, 0.25f, NULL, 0), TL_OK);
    tl_model *m = open_m(mp, false);
    tl_device *s0 = tu_sim_add("lsim4", 64 << 20);
    const char *g1[] = {"lsim4"};
    tl_plan *p = plan(m, g1, 1, 32 << 20, false);
    tl_session *s;
    assert_int_equal(tl_session_create(m, p, NULL, &s), TL_OK);
    tl_lora_set *set;
    assert_int_equal(tl_lora_set_create_at_load(s, 0, &set), TL_OK);
    assert_int_equal(tl_lora_set_add(set, l, 1.0f, NULL, 0), TL_OK);
    racer r[2] = {{s, 0, 40, 0, false}, {s, 1, 40, 0, false}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    int changed = 0;
    for (int i = 0; !atomic_load(&r[0].done) || !atomic_load(&r[1].done); i++) {
        tl_status st = tl_lora_set_scale(set, l, (float)(i % 7) * 0.5f);
        if (st == TL_OK) changed++;
        else assert_int_equal(st, TL_ERR_INVALID_ARG);
        usleep(100);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(tl_session_check(s), TL_OK);
    assert_true(r[0].ok > 0 && r[1].ok > 0);
    for (;;) { /* the last scale: as the eager merge at 0.25 */
        if (tl_lora_set_scale(set, l, 0.25f) == TL_OK) break;
    }
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a), TL_OK);
    for (size_t i = 0; i < N_FLOAT; i++) {
        unsigned char *got = read_back(a, i);
        assert_memory_equal(got, tl_model_tensor_data(w, i), tl_model_tensor(m, i)->nbytes);
        free(got);
    }
    assert_int_equal(tl_session_release(s, a), TL_OK);
    print_message("%d rescales went through, %d + %d acquires\n", changed, r[0].ok, r[1].ok);
    tl_lora_set_destroy(set);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    tl_plan_destroy(p);
    tl_model_close(m);
    tl_model_close(w);
    tl_lora_close(l);
    tl_device_unregister(s0);
    tl_device_release(s0);
    tu_tmpdir_rm(dir);
    free(mp);
    free(lp);
}

/* Distance in units in the last place between two values of type t (F16 / BF16 bits). */
static long ulps16(uint16_t a, uint16_t b) {
    long ka = a & 0x8000 ? -(long)(a & 0x7fff) : (long)a;
    long kb = b & 0x8000 ? -(long)(b & 0x7fff) : (long)b;
    return labs(ka - kb);
}

/*
 * got against want (tensor t of n elements of type dt): F32 the largest
 * |got - want| relative to max |want| (*worst), F16 / BF16 the largest
 * distance in ulps (*worst); *differ: elements not bit-equal.
 */
static void compare(tl_dtype dt, const void *got, const void *want, uint64_t n, double *worst,
                    uint64_t *differ) {
    *worst = 0;
    *differ = 0;
    if (dt == TL_DTYPE_F32) {
        const float *g = got, *w = want;
        double big = 0, d = 0;
        for (uint64_t i = 0; i < n; i++) {
            big = fmax(big, fabs((double)w[i]));
            d = fmax(d, fabs((double)g[i] - (double)w[i]));
            *differ += memcmp(&g[i], &w[i], 4) != 0;
        }
        *worst = big > 0 ? d / big : d;
        return;
    }
    const uint16_t *g = got, *w = want;
    for (uint64_t i = 0; i < n; i++) {
        long u = ulps16(g[i], w[i]);
        if ((double)u > *worst) *worst = (double)u;
        *differ += u != 0;
    }
}

/* Parts of tensor t of a on device d. */
static size_t parts_on(const tl_acquired *a, size_t t, const tl_device *d) {
    size_t c = 0;
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *st = tl_acquired_tensor(a, i);
        for (uint32_t q = 0; st->index == t && q < st->n_parts; q++)
            c += st->parts[q].tier == TL_TIER_DEVICE && st->parts[q].device == d;
    }
    return c;
}

/*
 * TL_LORA_ON_DEVICE: ggml:CPU merges the units it holds (F32, F16, BF16, two
 * LoRAs on three of them), within 1e-5 of max |W'| (F32) or 1 ulp (F16 /
 * BF16) of tl_lora_apply's bytes, the device-merge count being the targeted
 * units on it; a rescale reloads and merges again exactly the touched units;
 * a unit split between a sim and ggml:CPU is merged by rows on each; an RPC
 * server's device (memory not the host's: the file's rows go up through a
 * buffer) merges as ggml:CPU does; on a sim alone the flag changes nothing
 * (bit for bit, no device merge); a merge overflowing F16 is refused naming
 * the module, as on the host.
 */
static void test_on_device(void **state) {
    (void)state;
    TU_NEED_GGML();
    char *dir = tu_tmpdir(), *mp = tu_path(dir, "m.safetensors"), *l1p = tu_path(dir, "l1.st"),
         *l2p = tu_path(dir, "l2.st");
    write_st(mp, float_ts, N_FLOAT, NULL, 1.0f);
    write_lora(l1p, float_ts, 4, 8); /* a, b, c, d */
    write_lora(l2p, float_ts, 3, 4); /* a, b, c */
    tl_lora *l1, *l2;
    assert_int_equal(tl_lora_open(l1p, &l1), TL_OK);
    assert_int_equal(tl_lora_open(l2p, &l2), TL_OK);
    const float sc2[2] = {-0.6f, 1.3f};
    tl_model *w = open_m(mp, true);
    unsigned char *want[2][N_FLOAT];
    for (int v = 0; v < 2; v++) {
        tl_lora_set *es;
        assert_int_equal(tl_lora_set_create(w, NULL, &es), TL_OK);
        assert_int_equal(tl_lora_set_add(es, l1, 0.8f, NULL, 0), TL_OK);
        assert_int_equal(tl_lora_set_add(es, l2, sc2[v], NULL, 0), TL_OK);
        for (size_t i = 0; i < N_FLOAT; i++) {
            const tl_tensor_info *t = tl_model_tensor(w, i);
            want[v][i] = malloc(t->nbytes);
            memcpy(want[v][i], tl_model_tensor_data(w, i), t->nbytes);
            assert_int_equal(tl_model_tensor_unpatch(w, i), TL_OK);
        }
        tl_lora_set_destroy(es);
    }
    tl_model_close(w);
    tl_device *s0 = tu_sim_add("lsim5", 64 << 20);
    tl_device *cpu = NULL;
    assert_int_equal(tl_device_find("ggml:CPU", &cpu), TL_OK);
    /* an RPC server's device: ggml computes there, and its memory is not the host's */
    tu_rpc srv;
    char why[256], rpc_name[64];
    if (!tu_rpc_start(&srv, why, sizeof why)) fail_msg("%s", why);
    size_t n_rpc = 0;
    assert_int_equal(tl_device_ggml_rpc_add(srv.endpoint, &n_rpc), TL_OK);
    assert_true(n_rpc >= 1);
    tl_device *devs[64], *rpc = NULL;
    size_t nd = tl_device_list(devs, 64);
    for (size_t i = 0; i < nd && i < 64; i++)
        if (!rpc && strncmp(tl_device_name(devs[i]), "rpc", 3) == 0) rpc = devs[i];
    assert_non_null(rpc);
    assert_int_equal(tl_device_find(tl_device_name(rpc), &rpc), TL_OK);
    tl_device_list_release(devs, nd < 64 ? nd : 64);
    snprintf(rpc_name, sizeof rpc_name, "%s", tl_device_name(rpc));
    tl_model *m = open_m(mp, false);
    const char *on[4][2] = {
        {"ggml:CPU", NULL}, {"lsim5", "ggml:CPU"}, {"lsim5", NULL}, {rpc_name, NULL}};
    for (int c = 0; c < 4; c++) {
        tl_device *merger = c == 3 ? rpc : cpu;
        size_t ng = on[c][1] ? 2 : 1;
        tl_plan *p = plan(m, on[c], ng, ng == 2 ? 300 << 10 : 32 << 20, false);
        tl_session *s;
        assert_int_equal(tl_session_create(m, p, NULL, &s), TL_OK);
        tl_lora_set *set;
        assert_int_equal(tl_lora_set_create_at_load(s, TL_LORA_ON_DEVICE, &set), TL_OK);
        assert_int_equal(tl_lora_set_add(set, l1, 0.8f, NULL, 0), TL_OK);
        assert_int_equal(tl_lora_set_add(set, l2, sc2[0], NULL, 0), TL_OK);
        for (int v = 0; v < 2; v++) {
            tl_session_stats before, st;
            assert_int_equal(tl_session_stats_get(s, &before, sizeof before), TL_OK);
            tl_acquired *a;
            if (tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a))
                fail_msg("%s: %s", on[c][0], tl_last_error());
            assert_int_equal(tl_session_check(s), TL_OK);
            assert_int_equal(tl_session_stats_get(s, &st, sizeof st), TL_OK);
            /* units loaded now: all four tensors', then those of a, b, c (L2's) */
            size_t loaded = 0, on_cpu = 0, split = 0;
            for (size_t i = 0; i < (v ? 3u : N_FLOAT); i++) {
                for (size_t j = 0; j < tl_acquired_count(a); j++)
                    if (tl_acquired_tensor(a, j)->index == i) {
                        loaded += tl_acquired_tensor(a, j)->n_parts;
                        split += tl_acquired_tensor(a, j)->n_parts > 1;
                    }
                on_cpu += parts_on(a, i, merger);
            }
            if (ng == 2) assert_true(split > 0 && on_cpu > 0 && on_cpu < loaded);
            assert_int_equal(st.lora_loads - before.lora_loads, loaded);
            assert_int_equal(st.lora_device_merges - before.lora_device_merges, on_cpu);
            if (v) assert_int_equal(st.lora_reloads, loaded);
            for (size_t i = 0; i < N_FLOAT; i++) {
                const tl_tensor_info *t = tl_model_tensor(m, i);
                unsigned char *got = read_back(a, i);
                double worst;
                uint64_t differ;
                compare(t->dtype, got, want[v][i], t->n_elements, &worst, &differ);
                if (!on_cpu || parts_on(a, i, merger) == 0) { /* merged on the host */
                    if (memcmp(got, want[v][i], t->nbytes))
                        fail_msg("%s (round %d): %s merged on the host differs from "
                                 "tl_lora_apply's bytes", on[c][0], v, t->name);
                } else if (t->dtype == TL_DTYPE_F32 ? worst > 1e-5 : worst > 1) {
                    fail_msg("%s (round %d): %s merged on the device differs from "
                             "tl_lora_apply's bytes by %g%s", on[c][0], v, t->name, worst,
                             t->dtype == TL_DTYPE_F32 ? " of max |W'|" : " ulp");
                }
                if (parts_on(a, i, merger))
                    print_message("%s%s, round %d, %s %s: %llu of %llu elements differ from "
                                  "tl_lora_apply's, by at most %g%s\n", on[c][0],
                                  ng == 2 ? "+ggml:CPU" : "", v, t->name + strlen(UNET),
                                  tl_dtype_name(t->dtype), (unsigned long long)differ,
                                  (unsigned long long)t->n_elements, worst,
                                  t->dtype == TL_DTYPE_F32 ? " of max |W'|" : " ulp");
                free(got);
            }
            assert_int_equal(tl_session_release(s, a), TL_OK);
            if (v == 0) assert_int_equal(tl_lora_set_scale(set, l2, sc2[1]), TL_OK);
        }
        tl_lora_set_destroy(set);
        assert_int_equal(tl_session_destroy(s), TL_OK);
        tl_plan_destroy(p);
    }
    /* a merge that overflows F16 on the device is refused as on the host, naming the module */
    const char *g1[] = {"ggml:CPU"};
    tl_plan *p = plan(m, g1, 1, 32 << 20, false);
    tl_session *s;
    assert_int_equal(tl_session_create(m, p, NULL, &s), TL_OK);
    tl_lora_set *set;
    assert_int_equal(tl_lora_set_create_at_load(s, TL_LORA_ON_DEVICE, &set), TL_OK);
    assert_int_equal(tl_lora_set_add(set, l1, 1e6f, NULL, 0), TL_OK);
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a),
                     TL_ERR_FORMAT);
    assert_non_null(strstr(tl_last_error(), "overflow F16"));
    assert_non_null(strstr(tl_last_error(), "input_blocks.0.0.b"));
    tl_lora_set_destroy(set);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    tl_plan_destroy(p);
    for (int v = 0; v < 2; v++)
        for (size_t i = 0; i < N_FLOAT; i++)
            free(want[v][i]);
    tl_device_release(cpu);
    tl_device_release(rpc);
    tu_rpc_stop(&srv);
    tl_model_close(m);
    tl_lora_close(l1);
    tl_lora_close(l2);
    tl_device_unregister(s0);
    tl_device_release(s0);
    tu_tmpdir_rm(dir);
    free(mp);
    free(l1p);
    free(l2p);
}

/*
 * With TL_LORA_BENCH set: one 4096 x 4096 F16 weight, one rank-16 LoRA,
 * acquired on ggml:CPU merged on the host and by the device; times printed
 * (not asserted) with the difference between the two.
 */
static void test_device_merge_time(void **state) {
    (void)state;
    TU_NEED_GGML();
    if (!getenv("TL_LORA_BENCH")) skip();
    char *dir = tu_tmpdir(), *mp = tu_path(dir, "big.safetensors"), *lp = tu_path(dir, "l.st");
    const wt big[] = {{UNET "input_blocks.0.0.big.weight", TL_DTYPE_F16, 4096, 4096}};
    write_st(mp, big, 1, NULL, 1.0f);
    write_lora(lp, big, 1, 16);
    tl_lora *l;
    assert_int_equal(tl_lora_open(lp, &l), TL_OK);
    tl_model *m = open_m(mp, false);
    const char *g1[] = {"ggml:CPU"}, *th = getenv("TL_LORA_BENCH_THREADS");
    tl_plan *p = plan(m, g1, 1, 256 << 20, false);
    if (th) { /* ggml's CPU backend threads (its default, 4, spin on a machine with fewer cores) */
        tl_device *cpu = NULL;
        assert_int_equal(tl_device_find("ggml:CPU", &cpu), TL_OK);
        assert_int_equal(tl__ggml_dev_set_threads(cpu, atoi(th)), TL_OK);
        tl_device_release(cpu);
    }
    unsigned char *got[2];
    double secs[2];
    for (int dev = 0; dev < 2; dev++) {
        tl_session *s;
        assert_int_equal(tl_session_create(m, p, NULL, &s), TL_OK);
        tl_lora_set *set;
        assert_int_equal(tl_lora_set_create_at_load(s, dev ? TL_LORA_ON_DEVICE : 0, &set), TL_OK);
        assert_int_equal(tl_lora_set_add(set, l, 0.7f, NULL, 0), TL_OK);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        tl_acquired *a;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a),
                         TL_OK);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        secs[dev] = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
        tl_session_stats st;
        assert_int_equal(tl_session_stats_get(s, &st, sizeof st), TL_OK);
        assert_int_equal(st.lora_device_merges, dev ? 1 : 0);
        got[dev] = read_back(a, 0);
        assert_int_equal(tl_session_release(s, a), TL_OK);
        tl_lora_set_destroy(set);
        assert_int_equal(tl_session_destroy(s), TL_OK);
    }
    double worst;
    uint64_t differ;
    compare(TL_DTYPE_F16, got[1], got[0], 4096ull * 4096, &worst, &differ);
    print_message("4096 x 4096 F16, rank 16, acquire on ggml:CPU: host merge %.3f s, device "
                  "merge %.3f s; %llu elements differ, by at most %g ulp\n", secs[0], secs[1],
                  (unsigned long long)differ, worst);
    assert_true(worst <= 1);
    free(got[0]);
    free(got[1]);
    tl_plan_destroy(p);
    tl_model_close(m);
    tl_lora_close(l);
    tu_tmpdir_rm(dir);
    free(mp);
    free(lp);
}

int main(void) {
    tu_ggml_discover(); /* the tests' ggml: a failure to load it fails them */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_float_bit_for_bit),
        cmocka_unit_test(test_quantized),
        cmocka_unit_test(test_private_memory),
        cmocka_unit_test(test_concurrent_rescale),
        cmocka_unit_test(test_on_device),
        cmocka_unit_test(test_device_merge_time),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
