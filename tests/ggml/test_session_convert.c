/*
 * test_session_convert.c — sessions keeping tensors in another type
 * (tl_session_options.dtype, tl_session_set_dtype): for every float source
 * (F32, F16, BF16) and every target (F32, F16, BF16, Q8_0, Q4_0), the bytes a
 * session places on a sim GPU (converted through staging), on ggml:CPU
 * (converted straight into its memory) and split by rows over two sims are
 * the loader's conversion (tl_model_load with the same dtype) of the file's
 * bytes, and Q8_0 / Q4_0 blocks are ggml_quantize_chunk's; sizes, budgets
 * and the tensor info handed out are the converted ones; a run's hash check
 * compares against a conversion of the file's bytes.
 */
#include "rpc_server.h"
#include "st_writer.h"
#include "testutil.h"

#include "ggml.h"

#include <stdlib.h>
#include <string.h>

#define UNET "model.diffusion_model."

static uint64_t rng = 0x243F6A8885A308D3ull;
static float rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((float)(rng >> 40) / (float)(1 << 24) - 0.5f) * (float)(1u << (rng % 9)) / 16.0f;
}

static const char *const dt_names[] = {"F32", "F16", "BF16"};
static const tl_dtype dt_vals[] = {TL_DTYPE_F32, TL_DTYPE_F16, TL_DTYPE_BF16};

/* x as type t, by ggml's own converters. */
static void put(tl_dtype t, const float *x, void *out, int64_t n) {
    if (t == TL_DTYPE_F32)
        memcpy(out, x, (size_t)n * 4);
    else if (t == TL_DTYPE_F16)
        ggml_fp32_to_fp16_row(x, out, n);
    else
        ggml_fp32_to_bf16_row_ref(x, out, n);
}

static void get(tl_dtype t, const void *src, float *out, int64_t n) {
    if (t == TL_DTYPE_F32)
        memcpy(out, src, (size_t)n * 4);
    else if (t == TL_DTYPE_F16)
        ggml_fp16_to_fp32_row(src, out, n);
    else
        ggml_bf16_to_fp32_row(src, out, n);
}

typedef struct fx {
    char *dir, *path;
    unsigned char *img; /* the file's bytes, written by the test */
    tl_model *m;
} fx;

/* One diffusion layer: a 512 x 256 matrix (row-splittable), a 64 x 96 one and a bias, in src. */
static void make(fx *f, tl_dtype src) {
    static const char *const names[] = {UNET "input_blocks.0.0.proj.weight",
                                        UNET "input_blocks.0.0.small.weight",
                                        UNET "input_blocks.0.0.proj.bias"};
    const char *dn = dt_names[src == TL_DTYPE_F32 ? 0 : src == TL_DTYPE_F16 ? 1 : 2];
    sw_tensor ts[] = {{names[0], dn, 2, {512, 256}}, {names[1], dn, 2, {64, 96}},
                      {names[2], dn, 1, {256}}};
    size_t len;
    f->dir = tu_tmpdir();
    f->path = tu_path(f->dir, "m.safetensors");
    f->img = sw_build(ts, 3, NULL, true, &len);
    assert_true(sw_write_file(f->path, f->img, len));
    const char *paths[] = {f->path};
    assert_int_equal(tl_model_open(paths, 1, NULL, &f->m), TL_OK);
    for (size_t i = 0; i < tl_model_tensor_count(f->m); i++) { /* finite values, by ggml */
        const tl_tensor_info *t = tl_model_tensor(f->m, i);
        float *x = malloc(t->n_elements * sizeof *x);
        for (uint64_t k = 0; k < t->n_elements; k++)
            x[k] = rnd();
        put(src, x, f->img + t->offset, (int64_t)t->n_elements);
        free(x);
    }
    tl_model_close(f->m);
    assert_true(sw_write_file(f->path, f->img, len));
    assert_int_equal(tl_model_open(paths, 1, NULL, &f->m), TL_OK);
}

static void unmake(fx *f) {
    tl_model_close(f->m);
    tu_tmpdir_rm(f->dir);
    free(f->path);
    free(f->img);
}

/* A plan of the model counted as converted to `to`, over gpus (budget each; 0: a row split) and
 * the host. */
static tl_plan *plan(fx *f, tl_dtype to, const char *const *gpus, size_t n, uint64_t budget,
                     const char *backend) {
    tl_plan_summary sum;
    assert_int_equal(tl_plan_summary_from_model(f->m, to, &sum), TL_OK);
    if (!budget) /* 60% of the layer per GPU: only a row split keeps it on GPUs */
        budget = sum.comp[TL_COMP_DIFFUSION].bytes * 3 / 5;
    tl_plan *p = tu_plan_gpus(&sum, gpus, n, budget, backend, false);
    tl_plan_summary_clear(&sum);
    return p;
}

/*
 * Compare every part of acquired set a with the loader's conversion r of the
 * file's bytes to `to`; quantized tensors also with ggml's quantizer of the
 * file's values. Returns the bytes of device-tier parts; *split counts the
 * tensors that came in several parts.
 */
static uint64_t compare_set(fx *f, const tl_acquired *a, tl_dtype to, const tl_load_result *r,
                            size_t *split) {
    uint64_t used_parts = 0;
    *split = 0;
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *st = tl_acquired_tensor(a, i);
        const tl_loaded_tensor *lt = tl_load_result_tensor(r, st->index);
        const tl_tensor_info *fi = tl_model_tensor(f->m, st->index);
        if (st->info->dtype != lt->dtype || st->info->nbytes != lt->nbytes)
            fail_msg("%s -> %s: %s is %s, %llu bytes in the session, %s, %llu loaded",
                     tl_dtype_name(fi->dtype), tl_dtype_name(to), fi->name,
                     tl_dtype_name(st->info->dtype), (unsigned long long)st->info->nbytes,
                     tl_dtype_name(lt->dtype), (unsigned long long)lt->nbytes);
        unsigned char *got = malloc(st->info->nbytes);
        uint64_t covered = 0;
        for (uint32_t q = 0; q < st->n_parts; q++) {
            const tl_session_part *pt = &st->parts[q];
            assert_true(pt->offset + pt->nbytes <= st->info->nbytes);
            covered += pt->nbytes;
            if (pt->tier != TL_TIER_DEVICE) { /* not converted: zero copy where it can be */
                assert_int_equal(st->info->dtype, fi->dtype);
                memcpy(got + pt->offset, pt->host, pt->nbytes);
                continue;
            }
            assert_int_equal(
                tl_device_copy_from(pt->device, got + pt->offset, pt->dptr, pt->nbytes), TL_OK);
            used_parts += pt->nbytes;
        }
        *split += st->n_parts > 1;
        assert_int_equal(covered, st->info->nbytes);
        if (memcmp(got, lt->data, lt->nbytes))
            fail_msg("%s -> %s: %s differs from the loader's conversion", tl_dtype_name(fi->dtype),
                     tl_dtype_name(to), fi->name);
        if (lt->dtype == TL_DTYPE_Q8_0 || lt->dtype == TL_DTYPE_Q4_0) {
            enum ggml_type gt = lt->dtype == TL_DTYPE_Q8_0 ? GGML_TYPE_Q8_0 : GGML_TYPE_Q4_0;
            float *x = malloc(fi->n_elements * sizeof *x);
            get(fi->dtype, f->img + fi->offset, x, (int64_t)fi->n_elements);
            unsigned char *want = malloc(st->info->nbytes);
            size_t w = ggml_quantize_chunk(gt, x, want, 0, fi->shape[0], fi->shape[1], NULL);
            assert_int_equal(w, st->info->nbytes);
            if (memcmp(got, want, w))
                fail_msg("%s -> %s: %s differs from ggml's quantizer", tl_dtype_name(fi->dtype),
                         tl_dtype_name(to), fi->name);
            free(want);
            free(x);
        }
        free(got);
    }
    return used_parts;
}

static uint64_t device_used(const tl_session *s) {
    tl_session_stats ss;
    assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
    uint64_t used = 0;
    for (size_t d = 0; d < ss.n_devices; d++)
        used += ss.devices[d].used;
    return used;
}

static void evict_everything(tl_session *s) {
    tl_session_stats ss;
    assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
    for (size_t d = 0; d < ss.n_devices; d++) {
        uint64_t freed = 0;
        assert_int_equal(tl_session_evict_all(s, ss.devices[d].name, &freed), TL_OK);
    }
}

static tl_session *converting(fx *f, tl_plan *p, tl_dtype to, uint64_t pinned_cap) {
    tl_session_options o;
    tl_session_options_init(&o);
    o.convert = true;
    o.dtype = to;
    o.pinned_cap = pinned_cap;
    o.staging_size = 32 << 10; /* a 512 x 256 matrix moves in several chunks */
    tl_session *s;
    assert_int_equal(tl_session_create(f->m, p, &o, &s), TL_OK);
    return s;
}

/*
 * Acquire the layer through a session converting to `to`, twice (evicted in
 * between), and compare with the loader's r; the bytes on devices (stats)
 * are the converted sizes; then a run's check of every byte.
 */
static void check_session(fx *f, tl_plan *p, tl_dtype to, const tl_load_result *r,
                          size_t *split) {
    tl_session *s = converting(f, p, to, 0);
    for (int round = 0; round < 2; round++) {
        tl_acquired *a;
        if (tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a))
            fail_msg("-> %s: %s", tl_dtype_name(to), tl_last_error());
        assert_int_equal(tl_session_check(s), TL_OK);
        assert_int_equal(device_used(s), compare_set(f, a, to, r, split));
        assert_int_equal(tl_session_release(s, a), TL_OK);
        evict_everything(s);
        assert_int_equal(tl_session_check(s), TL_OK);
    }
    /* a run checks every acquired byte against a conversion of the file's */
    tl_run_options ro;
    tl_run_options_init(&ro);
    ro.pipeline = "diffusion*2";
    tl_run_report *rep = NULL;
    assert_int_equal(tl_run_pipeline(s, &ro, &rep), TL_OK);
    const tl_run_phase *tot = tl_run_report_total(rep);
    assert_true(tot->tensors_checked >= 6);
    assert_int_equal(tot->hash_mismatches, 0);
    tl_run_report_destroy(rep);
    assert_int_equal(tl_session_destroy(s), TL_OK);
}

/*
 * Streamed through a sim with a pinned tier: the first load converts from the
 * file and fills the pinned copy with converted bytes, the next ones upload
 * from it; a unit written on the device (dirty) goes to RAM and comes back as
 * it was. F16 -> F32 doubles the bytes (the staging chunk holds the result).
 */
static void test_pinned_and_dirty(void **state) {
    (void)state;
    TU_NEED_GGML();
    tl_device *s0 = tu_sim_add("cvsim3", 64 << 20);
    fx f = {0};
    make(&f, TL_DTYPE_F16);
    tl_load_options lo;
    tl_load_options_init(&lo);
    lo.convert = true;
    lo.dtype = TL_DTYPE_F32;
    tl_load_result *r = NULL;
    assert_int_equal(tl_model_load(f.m, &lo, &r), TL_OK);
    tl_plan *p = tu_plan_one_gpu(f.m, "cvsim3", 32 << 20, NULL, true); /* streamed */
    tl_session *s = converting(&f, p, TL_DTYPE_F32, 16 << 20);
    size_t split;
    for (int round = 0; round < 3; round++) {
        tl_acquired *a;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a),
                         TL_OK);
        compare_set(&f, a, TL_DTYPE_F32, r, &split);
        if (round == 1) /* as if the engine wrote it: saved to RAM on eviction */
            assert_int_equal(tl_session_mark_dirty(s, tl_acquired_tensor(a, 0)->index), TL_OK);
        assert_int_equal(tl_session_release(s, a), TL_OK);
        evict_everything(s);
        assert_int_equal(tl_session_check(s), TL_OK);
    }
    tl_session_stats ss;
    assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
    uint64_t conv = 0;
    for (size_t i = 0; i < tl_model_tensor_count(f.m); i++)
        conv += tl_model_tensor(f.m, i)->n_elements * 4;
    assert_int_equal(ss.moved[TL_TIER_FILE][TL_TIER_PINNED], conv); /* filled once, converted */
    assert_true(ss.moved[TL_TIER_PINNED][TL_TIER_DEVICE] > 0);
    assert_true(ss.moved[TL_TIER_RAM][TL_TIER_DEVICE] > 0);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    tl_load_result_destroy(r);
    tl_plan_destroy(p);
    unmake(&f);
    tl_device_unregister(s0);
    tl_device_release(s0);
}

static void test_every_pair(void **state) {
    (void)state;
    TU_NEED_GGML();
    static const tl_dtype tos[] = {TL_DTYPE_F32, TL_DTYPE_F16, TL_DTYPE_BF16, TL_DTYPE_Q8_0,
                                   TL_DTYPE_Q4_0};
    tl_device *s0 = tu_sim_add("cvsim0", 64 << 20), *s1 = tu_sim_add("cvsim1", 64 << 20);
    tl_device *cpu = NULL;
    assert_int_equal(tl_device_find("ggml:CPU", &cpu), TL_OK);
    for (int a = 0; a < 3; a++) {
        fx f = {0};
        make(&f, dt_vals[a]);
        for (size_t b = 0; b < sizeof tos / sizeof tos[0]; b++) {
            tl_dtype to = tos[b];
            tl_load_options lo;
            tl_load_options_init(&lo);
            lo.convert = true;
            lo.dtype = to;
            tl_load_result *r = NULL;
            assert_int_equal(tl_model_load(f.m, &lo, &r), TL_OK);
            size_t split;
            /* a sim GPU: converted into staging, then copied */
            const char *g1[] = {"cvsim0"};
            tl_plan *p = plan(&f, to, g1, 1, 32 << 20, NULL);
            check_session(&f, p, to, r, &split);
            tl_plan_destroy(p);
            /* ggml:CPU: host memory, converted straight into it */
            const char *gc[] = {"ggml:CPU"};
            p = plan(&f, to, gc, 1, 32 << 20, NULL);
            check_session(&f, p, to, r, &split);
            tl_plan_destroy(p);
            /* split by rows over two sims: parts of whole rows, so whole blocks */
            const char *g2[] = {"cvsim0", "cvsim1"};
            p = plan(&f, to, g2, 2, 0, NULL);
            tl_plan_decision dec;
            assert_int_equal(tl_plan_decision_of(p, TL_COMP_DIFFUSION, &dec, sizeof dec), TL_OK);
            assert_int_equal(dec.mode, TL_PLAN_MODE_ROW_SPLIT);
            check_session(&f, p, to, r, &split);
            assert_int_equal(split, 1); /* the 512 x 256 matrix */
            tl_plan_destroy(p);
            tl_load_result_destroy(r);
        }
        unmake(&f);
    }
    tl_device_release(cpu);
    tl_device_unregister(s0);
    tl_device_unregister(s1);
    tl_device_release(s0);
    tl_device_release(s1);
}

/*
 * tl_session_set_dtype: one tensor kept as F16 while others stay; refused
 * while acquired, for a conversion that does not exist and for rows that are
 * not whole blocks; the info handed out follows.
 */
static void test_set_dtype(void **state) {
    (void)state;
    TU_NEED_GGML();
    tl_device *s0 = tu_sim_add("cvsim2", 64 << 20);
    fx f = {0};
    make(&f, TL_DTYPE_F32);
    const char *g1[] = {"cvsim2"};
    tl_plan *p = plan(&f, TL_DTYPE_INVALID, g1, 1, 32 << 20, NULL);
    tl_session *s;
    assert_int_equal(tl_session_create(f.m, p, NULL, &s), TL_OK);
    size_t big = tl_model_find(f.m, UNET "input_blocks.0.0.proj.weight");
    size_t small = tl_model_find(f.m, UNET "input_blocks.0.0.small.weight");
    assert_int_equal(tl_session_set_dtype(s, big, TL_DTYPE_BF16), TL_OK);
    /* 96 is 3 blocks of 32; rows of Q4_K's 256 are not */
    assert_int_equal(tl_session_set_dtype(s, small, TL_DTYPE_Q4_K), TL_ERR_UNSUPPORTED);
    assert_non_null(strstr(tl_last_error(), "small.weight"));
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a), TL_OK);
    assert_int_equal(tl_session_set_dtype(s, big, TL_DTYPE_F16), TL_ERR_INVALID_ARG);
    const tl_tensor_info *bt = tl_model_tensor(f.m, big);
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *st = tl_acquired_tensor(a, i);
        if (st->index != big) {
            assert_int_equal(st->info->dtype, TL_DTYPE_F32);
            continue;
        }
        assert_int_equal(st->info->dtype, TL_DTYPE_BF16);
        assert_int_equal(st->info->nbytes, bt->n_elements * 2);
        uint16_t *got = malloc(st->info->nbytes), *want = malloc(st->info->nbytes);
        assert_int_equal(
            tl_device_copy_from(st->parts[0].device, got, st->parts[0].dptr, st->info->nbytes),
            TL_OK);
        float *x = malloc(bt->n_elements * 4);
        memcpy(x, f.img + bt->offset, bt->n_elements * 4);
        ggml_fp32_to_bf16_row_ref(x, (ggml_bf16_t *)want, (int64_t)bt->n_elements);
        assert_memory_equal(got, want, st->info->nbytes);
        free(x);
        free(got);
        free(want);
    }
    assert_int_equal(tl_session_release(s, a), TL_OK);
    /* released (a clean copy on the device): back to the file's type, reloaded as such */
    assert_int_equal(tl_session_set_dtype(s, big, TL_DTYPE_F32), TL_OK);
    assert_int_equal(tl_session_check(s), TL_OK);
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a), TL_OK);
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *st = tl_acquired_tensor(a, i);
        assert_int_equal(st->info->dtype, TL_DTYPE_F32);
        assert_int_equal(st->info->nbytes, tl_model_tensor(f.m, st->index)->nbytes);
    }
    assert_int_equal(tl_session_release(s, a), TL_OK);
    assert_int_equal(tl_session_check(s), TL_OK);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    /* a target sessions do not make */
    tl_session_options o;
    tl_session_options_init(&o);
    o.convert = true;
    o.dtype = TL_DTYPE_Q4_K;
    assert_int_equal(tl_session_create(f.m, p, &o, &s), TL_ERR_INVALID_ARG);
    tl_plan_destroy(p);
    unmake(&f);
    tl_device_unregister(s0);
    tl_device_release(s0);
}

int main(void) {
    tu_ggml_discover(); /* the tests' ggml: a failure to load it fails them */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_pair),
        cmocka_unit_test(test_set_dtype),
        cmocka_unit_test(test_pinned_and_dirty),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
