/*
 * test_lora_poison.c — no non-finite weight from a LoRA, and no delta applied
 * twice: NaN/Inf/huge alphas (safetensors and GGUF), factors holding NaN or
 * Inf, a finite merge that overflows F16, NaN/Inf scales, one module named
 * three ways, two parts of one kind, an ambiguous kohya name. Each refused
 * case leaves the weights exactly as the file has them. Expected values are
 * the test's own: weights of 1, factors chosen so that one application adds
 * exactly 0.5.
 */
#include "testutil.h"

#include "gguf_writer.h"
#include "st_writer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct tv {
    const char *name;
    const char *dtype; /* F32, F64 or F16 */
    uint32_t nd;
    int64_t shape[2];
    const double *v;
} tv;

static uint16_t f16_of(double v) { /* exact for the values used here (normal, few bits) */
    if (v == 0) return 0;
    uint16_t sign = v < 0 ? 0x8000 : 0;
    int e;
    double m = frexp(fabs(v), &e);
    return (uint16_t)(sign | ((e - 1 + 15) << 10) | ((int)ldexp(m, 11) - 1024));
}
static double f16_val(uint16_t h) {
    int e = (h >> 10) & 31, mant = h & 1023;
    if (e == 31) return mant ? NAN : (h & 0x8000 ? -INFINITY : INFINITY);
    double v = e ? ldexp(1024 + mant, e - 25) : ldexp(mant, -24);
    return (h & 0x8000) ? -v : v;
}
static unsigned esz(const char *dt) { return !strcmp(dt, "F64") ? 8 : !strcmp(dt, "F16") ? 2 : 4; }
static uint64_t count(const tv *t) {
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->nd; d++) n *= (uint64_t)t->shape[d];
    return n;
}

static void write_st(const char *path, const tv *ts, size_t n) {
    char hdr[8192];
    size_t o = (size_t)snprintf(hdr, sizeof hdr, "{");
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t nb = count(&ts[i]) * esz(ts[i].dtype);
        o += (size_t)snprintf(hdr + o, sizeof hdr - o, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                              i ? "," : "", ts[i].name, ts[i].dtype);
        for (uint32_t d = 0; d < ts[i].nd; d++)
            o += (size_t)snprintf(hdr + o, sizeof hdr - o, "%s%lld", d ? "," : "",
                                  (long long)ts[i].shape[d]);
        o += (size_t)snprintf(hdr + o, sizeof hdr - o, "],\"data_offsets\":[%llu,%llu]}",
                              (unsigned long long)off, (unsigned long long)(off + nb));
        off += nb;
    }
    snprintf(hdr + o, sizeof hdr - o, "}");
    unsigned char *data = malloc(off ? off : 1);
    off = 0;
    for (size_t i = 0; i < n; i++)
        for (uint64_t k = 0; k < count(&ts[i]); k++) {
            double v = ts[i].v[k];
            if (!strcmp(ts[i].dtype, "F64")) {
                memcpy(data + off, &v, 8);
            } else if (!strcmp(ts[i].dtype, "F16")) {
                uint16_t h = f16_of(v);
                memcpy(data + off, &h, 2);
            } else {
                float f = (float)v;
                memcpy(data + off, &f, 4);
            }
            off += esz(ts[i].dtype);
        }
    size_t len;
    uint8_t *img = sw_build_raw(hdr, data, off, true, &len);
    assert_true(sw_write_file(path, img, len));
    free(img);
    free(data);
}

static const double up1[2] = {1, 1};       /* [2, 1] */
static const double down05[2] = {0.5, 0.5}; /* [1, 2] */

/* A model with F32 (or F16) weight "model.diffusion_model.out.weight" [2, 2] of `w`. */
static char *model_file(const char *dir, const char *dtype, double w) {
    double v[4] = {w, w, w, w};
    tv t[] = {{"model.diffusion_model.out.weight", dtype, 2, {2, 2}, v}};
    char *p = tu_path(dir, "model.safetensors");
    write_st(p, t, 1);
    return p;
}

static tl_model *open_rw(const char *path) {
    tl_model_options o;
    tl_model_options_init(&o);
    o.writable = true;
    tl_model *m = NULL;
    assert_int_equal(tl_model_open(&path, 1, &o, &m), TL_OK);
    return m;
}

static void weights(tl_model *m, double out[4]) {
    const tl_tensor_info *t = tl_model_tensor(m, 0);
    const unsigned char *p = tl_model_tensor_data(m, 0);
    for (int i = 0; i < 4; i++) {
        if (t->dtype == TL_DTYPE_F16) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = f16_val(h);
        } else {
            float f;
            memcpy(&f, p + 4 * i, 4);
            out[i] = f;
        }
    }
}

/* Open the LoRA and apply it at scale; the status of whichever step refused (or TL_OK). */
static tl_status try_lora(tl_model *m, const char *lpath, float scale, tl_lora_report *r) {
    tl_lora *l = NULL;
    tl_status st = tl_lora_open(lpath, &l);
    if (st) return st;
    st = tl_lora_apply(m, l, scale, r, sizeof *r);
    tl_lora_close(l);
    return st;
}

static void expect_refused_unchanged(tl_model *m, const char *lpath, float scale, double w,
                                     const char *needle) {
    tl_status st = try_lora(m, lpath, scale, NULL);
    double got[4];
    weights(m, got);
    for (int i = 0; i < 4; i++)
        if (got[i] != w)
            fail_msg("%s: weight %d is %g after the merge (status %s), expected the file's %g",
                     lpath, i, got[i], tl_status_name(st), w);
    if (st == TL_OK) fail_msg("%s: a poisoned LoRA was applied with status OK", lpath);
    assert_true(st == TL_ERR_FORMAT || st == TL_ERR_INVALID_ARG);
    if (needle && !strstr(tl_last_error(), needle))
        fail_msg("message does not name '%s': %s", needle, tl_last_error());
}

static void test_nonfinite_alpha_refused(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *mp = model_file(dir, "F32", 1.0);
    const double alphas[] = {NAN, INFINITY, -INFINITY, 1e300};
    const char *dts[] = {"F32", "F32", "F32", "F64"};
    for (int i = 0; i < 4; i++) {
        double a = alphas[i];
        tv t[] = {{"lora_unet_out.lora_up.weight", "F32", 2, {2, 1}, up1},
                  {"lora_unet_out.lora_down.weight", "F32", 2, {1, 2}, down05},
                  {"lora_unet_out.alpha", dts[i], 0, {0}, &a}};
        char *lp = tu_path(dir, "alpha.safetensors");
        write_st(lp, t, 3);
        tl_model *m = open_rw(mp);
        expect_refused_unchanged(m, lp, 1.0f, 1.0, "lora_unet_out");
        tl_model_close(m);
        free(lp);
    }
    free(mp);
    tu_tmpdir_rm(dir);
}

static void test_gguf_nonfinite_alpha_refused(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *mp = model_file(dir, "F32", 1.0);
    const double alphas[] = {NAN, INFINITY, 1e300};
    for (int i = 0; i < 3; i++) {
        gw_gguf *g = gw_new(3);
        if (i < 2) gw_kv_f32(g, "adapter.lora.alpha", (float)alphas[i]);
        else gw_kv_f64(g, "adapter.lora.alpha", alphas[i]);
        float a[2] = {1, 1}, b[2] = {0.5f, 0.5f};
        int64_t sa[2] = {1, 2}, sb[2] = {2, 1}; /* ggml order: innermost first */
        size_t ta = gw_tensor(g, "model.diffusion_model.out.weight.lora_a", TL_DTYPE_F32, 2, sb);
        gw_tensor_data(g, ta, b, 8);
        size_t tb = gw_tensor(g, "model.diffusion_model.out.weight.lora_b", TL_DTYPE_F32, 2, sa);
        gw_tensor_data(g, tb, a, 8);
        char *lp = tu_path(dir, "adapter.gguf");
        assert_true(gw_write_file(g, lp));
        gw_free(g);
        tl_model *m = open_rw(mp);
        expect_refused_unchanged(m, lp, 1.0f, 1.0, "alpha");
        tl_model_close(m);
        free(lp);
    }
    free(mp);
    tu_tmpdir_rm(dir);
}

static void test_nonfinite_factor_refused(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *mp = model_file(dir, "F32", 1.0);
    const double bads[] = {NAN, INFINITY};
    for (int i = 0; i < 2; i++) {
        double up[2] = {1, bads[i]};
        tv t[] = {{"lora_unet_out.lora_up.weight", "F32", 2, {2, 1}, up},
                  {"lora_unet_out.lora_down.weight", "F32", 2, {1, 2}, down05}};
        char *lp = tu_path(dir, "factor.safetensors");
        write_st(lp, t, 2);
        tl_model *m = open_rw(mp);
        expect_refused_unchanged(m, lp, 1.0f, 1.0, "lora_unet_out");
        tl_model_close(m);
        free(lp);
    }
    free(mp);
    tu_tmpdir_rm(dir);
}

static void test_f16_overflow_refused(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *mp = model_file(dir, "F16", 60000.0);
    const double up[2] = {8192, 8192}; /* 60000 + 8192 * 0.5 * 2 = 68192 > 65504 */
    const double dn[2] = {1, 1};
    tv t[] = {{"lora_unet_out.lora_up.weight", "F32", 2, {2, 1}, up},
              {"lora_unet_out.lora_down.weight", "F32", 2, {1, 2}, dn}};
    char *lp = tu_path(dir, "big.safetensors");
    write_st(lp, t, 2);
    tl_model *m = open_rw(mp);
    expect_refused_unchanged(m, lp, 1.0f, 60000.0, "overflow");
    tl_model_close(m);
    free(lp);
    free(mp);
    tu_tmpdir_rm(dir);
}

static void test_nonfinite_scale_refused(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *mp = model_file(dir, "F32", 1.0);
    tv t[] = {{"lora_unet_out.lora_up.weight", "F32", 2, {2, 1}, up1},
              {"lora_unet_out.lora_down.weight", "F32", 2, {1, 2}, down05}};
    char *lp = tu_path(dir, "ok.safetensors");
    write_st(lp, t, 2);
    const float scales[] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
        tl_model *m = open_rw(mp);
        expect_refused_unchanged(m, lp, scales[i], 1.0, "scale");
        tl_lora *l = NULL;
        assert_int_equal(tl_lora_open(lp, &l), TL_OK);
        assert_int_equal(tl_lora_apply_module(m, l, 0, 0, scales[i]), TL_ERR_INVALID_ARG);
        tl_lora_set *set = NULL;
        assert_int_equal(tl_lora_set_create(m, NULL, &set), TL_OK);
        assert_int_equal(tl_lora_set_add(set, l, scales[i], NULL, 0), TL_ERR_INVALID_ARG);
        assert_int_equal(tl_lora_set_add(set, l, 1.0f, NULL, 0), TL_OK);
        assert_int_equal(tl_lora_set_scale(set, l, scales[i]), TL_ERR_INVALID_ARG);
        double got[4];
        weights(m, got);
        for (int k = 0; k < 4; k++) assert_true(got[k] == 1.5);
        tl_lora_set_destroy(set);
        tl_lora_close(l);
        tl_model_close(m);
    }
    free(lp);
    free(mp);
    tu_tmpdir_rm(dir);
}

/* One application adds 0.5 to every weight: the result must be 1.5, never 2 or 2.5. */
static void expect_once(const char *mp, const char *lp, size_t unmatched) {
    tl_model *m = open_rw(mp);
    tl_lora_report r;
    assert_int_equal(try_lora(m, lp, 1.0f, &r), TL_OK);
    double got[4];
    weights(m, got);
    for (int i = 0; i < 4; i++)
        if (got[i] != 1.5)
            fail_msg("%s: weight %d is %g: the delta 0.5 was applied %g times", lp, i, got[i],
                     (got[i] - 1) / 0.5);
    if (r.n_unmatched != unmatched)
        fail_msg("%s: %zu names reported, expected %zu", lp, r.n_unmatched, unmatched);
    tl_model_close(m);
}

static void test_one_module_named_three_ways(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *mp = model_file(dir, "F32", 1.0);
    tv t[] = {{"lora_unet_out.lora_up.weight", "F32", 2, {2, 1}, up1},
              {"lora_unet_out.lora_down.weight", "F32", 2, {1, 2}, down05},
              {"diffusion_model.out.lora_up.weight", "F32", 2, {2, 1}, up1},
              {"diffusion_model.out.lora_down.weight", "F32", 2, {1, 2}, down05},
              {"model.diffusion_model.out.lora_up.weight", "F32", 2, {2, 1}, up1},
              {"model.diffusion_model.out.lora_down.weight", "F32", 2, {1, 2}, down05}};
    char *lp = tu_path(dir, "three.safetensors");
    write_st(lp, t, 6);
    expect_once(mp, lp, 2);
    /* --lora-strict refuses it (the two extra names are reported) */
    char *out = tu_path(dir, "out.safetensors");
    tu_run run = tu_cli_run("merge", mp, "--lora", lp, "--lora-strict", "-o", out, NULL);
    assert_int_not_equal(run.status, 0);
    assert_non_null(strstr(run.err, "again"));
    tu_run_free(&run);
    free(out);
    free(lp);
    free(mp);
    tu_tmpdir_rm(dir);
}

static void test_two_parts_of_one_kind(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *mp = model_file(dir, "F32", 1.0);
    const double down1[2] = {1, 1};
    tv t[] = {{"lora_unet_out.lora_up.weight", "F32", 2, {2, 1}, up1},
              {"lora_unet_out.lora_down.weight", "F32", 2, {1, 2}, down05},
              {"lora_unet_out.lora_A.weight", "F32", 2, {1, 2}, down1},
              {"diffusion_model.out.lora_up.weight", "F32", 2, {2, 1}, up1},
              {"diffusion_model.out.lora_down.weight", "F32", 2, {1, 2}, down05}};
    char *lp = tu_path(dir, "twoparts.safetensors");
    write_st(lp, t, 5);
    /* the module with lora_down and lora_A is reported and not applied; the other one is */
    expect_once(mp, lp, 1);
    free(lp);
    free(mp);
    tu_tmpdir_rm(dir);
}

static void test_ambiguous_kohya_name(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    double v[4] = {1, 1, 1, 1};
    tv mt[] = {{"model.diffusion_model.a.b_c.weight", "F32", 2, {2, 2}, v},
               {"model.diffusion_model.a_b.c.weight", "F32", 2, {2, 2}, v}};
    char *mp = tu_path(dir, "model.safetensors");
    write_st(mp, mt, 2);
    tv t[] = {{"lora_unet_a_b_c.lora_up.weight", "F32", 2, {2, 1}, up1},
              {"lora_unet_a_b_c.lora_down.weight", "F32", 2, {1, 2}, down05}};
    char *lp = tu_path(dir, "amb.safetensors");
    write_st(lp, t, 2);
    tl_model *m = open_rw(mp);
    tl_lora_report r;
    assert_int_equal(try_lora(m, lp, 1.0f, &r), TL_OK);
    for (size_t ti = 0; ti < 2; ti++) {
        const float *w = tl_model_tensor_data(m, ti);
        for (int i = 0; i < 4; i++)
            if (w[i] != 1.0f)
                fail_msg("ambiguous name applied to '%s'", tl_model_tensor(m, ti)->name);
    }
    assert_int_equal(r.n_unmatched, 1);
    assert_non_null(strstr(r.unmatched[0], "lora_unet_a_b_c"));
    tl_model_close(m);
    free(lp);
    free(mp);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nonfinite_alpha_refused),
        cmocka_unit_test(test_gguf_nonfinite_alpha_refused),
        cmocka_unit_test(test_nonfinite_factor_refused),
        cmocka_unit_test(test_f16_overflow_refused),
        cmocka_unit_test(test_nonfinite_scale_refused),
        cmocka_unit_test(test_one_module_named_three_ways),
        cmocka_unit_test(test_two_parts_of_one_kind),
        cmocka_unit_test(test_ambiguous_kohya_name),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
