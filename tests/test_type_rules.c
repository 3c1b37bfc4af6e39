/*
 * test_type_rules.c — types per tensor name (stable-diffusion.cpp's
 * --tensor-type-rules) in a load, a plan and a session: the first rule whose
 * pattern is found in a name gives the type where that conversion exists for
 * the tensor (a Q8_0 rule on rows of 30 elements leaves F32), tensors no rule
 * names follow the one dtype (tl_convert_target), and all three agree.
 * Expected types are written down by hand from the rules; the converted
 * values are checked against the test's own reference (helpers/ref_convert)
 * for floats, and the plan's and session's bytes against the load's.
 * Bad rules: an item without '=', a pattern that does not compile, a type
 * rules do not take, patterns too costly to compile (nested repetitions), and
 * rules given to a plan that sees no names.
 */
#include "testutil.h"

#include "ref_convert.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct spec {
    const char *name;
    tl_dtype dtype;
    int64_t rows, cols;
    tl_dtype want; /* by hand, from RULES and DTYPE below */
} spec;

#define RULES "^vae\\.=f16,model\\..*weight=q8_0,\\.bias=bf16,a\\.weight=f32"
#define DTYPE TL_DTYPE_BF16

static const spec tensors[] = {
    {"vae.conv.weight", TL_DTYPE_F32, 8, 64, TL_DTYPE_F16},    /* rule 1 */
    {"model.a.weight", TL_DTYPE_F32, 16, 64, TL_DTYPE_Q8_0},   /* rule 2 (rule 4 comes later) */
    {"model.b.weight", TL_DTYPE_F32, 16, 30, TL_DTYPE_F32},    /* rule 2, but rows of 30 */
    {"model.bias", TL_DTYPE_F32, 1, 64, TL_DTYPE_BF16},        /* rule 3 */
    {"cond.proj.weight", TL_DTYPE_F16, 4, 64, TL_DTYPE_BF16},  /* no rule: DTYPE */
    {"cond.pos", TL_DTYPE_F32, 1, 16, TL_DTYPE_BF16},          /* no rule: DTYPE */
};
#define N (sizeof tensors / sizeof tensors[0])

static float value(size_t t, int64_t k) {
    return (float)sin((double)(k + 1) * 0.37 + (double)t) * (float)(1 + t);
}

/* IEEE half of f, rounded to nearest even (finite values of this test's range; no NaN). */
static uint16_t to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, mant = x & 0x7fffffu;
    int32_t e = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) { /* subnormal half (or zero) */
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e), h = mant >> shift, rem = mant & ((1u << shift) - 1),
                 half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* a carry rounds into the exponent */
    return (uint16_t)(sign | h);
}

/* The model file: each tensor [rows, cols] (cols innermost) of value(). */
static char *write_model(char **dir) {
    *dir = tu_tmpdir();
    char *path = tu_path(*dir, "rules.safetensors");
    tl_writer *w = NULL;
    assert_int_equal(tl_writer_create(TL_FORMAT_SAFETENSORS, &w), TL_OK);
    for (size_t i = 0; i < N; i++) {
        int64_t shape[2] = {tensors[i].rows, tensors[i].cols};
        uint64_t n = (uint64_t)(tensors[i].rows * tensors[i].cols);
        int nd = tensors[i].rows == 1 ? 1 : 2;
        int64_t *sh = nd == 1 ? &shape[1] : shape;
        assert_int_equal(tl_writer_tensor(w, tensors[i].name, tensors[i].dtype, (uint32_t)nd, sh,
                                          n * (tensors[i].dtype == TL_DTYPE_F16 ? 2 : 4), NULL),
                         TL_OK);
    }
    const void *hdr;
    size_t h;
    assert_int_equal(tl_writer_header(w, &hdr, &h), TL_OK);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(hdr, 1, h, f), h);
    tl_writer_destroy(w);
    for (size_t i = 0; i < N; i++)
        for (int64_t k = 0; k < tensors[i].rows * tensors[i].cols; k++) {
            float v = value(i, k);
            if (tensors[i].dtype == TL_DTYPE_F16) {
                uint16_t u = to_half(v);
                assert_int_equal(fwrite(&u, 2, 1, f), 1);
            } else {
                assert_int_equal(fwrite(&v, 4, 1, f), 1);
            }
        }
    assert_int_equal(fclose(f), 0);
    return path;
}

static tl_model *open_model(const char *path) {
    tl_model *m = NULL;
    const char *p[] = {path};
    assert_int_equal(tl_model_open(p, 1, NULL, &m), TL_OK);
    return m;
}

static void *file_bytes(tl_model *m, size_t t) {
    return (unsigned char *)tl_model_file_map(m, tl_model_tensor(m, t)->file) +
           tl_model_tensor(m, t)->offset;
}

/* Q8_0 blocks as ggml defines them: d = max|x| / 127 (F16), q = round(x / d). */
static void check_q8_0(const unsigned char *got, const float *x, uint64_t n, const char *name) {
    for (uint64_t b = 0; b < n / 32; b++) {
        float amax = 0;
        for (int k = 0; k < 32; k++) amax = fmaxf(amax, fabsf(x[b * 32 + k]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        uint16_t dh = to_half(d), gd;
        memcpy(&gd, got + b * 34, 2);
        if (gd != dh) fail_msg("%s: block %llu: scale %04x, want %04x", name, (unsigned long long)b, gd, dh);
        for (int k = 0; k < 32; k++) {
            int8_t q = (int8_t)roundf(x[b * 32 + k] * id);
            if ((int8_t)got[b * 34 + 2 + k] != q)
                fail_msg("%s: element %llu: %d, want %d", name, (unsigned long long)(b * 32 + k),
                         (int8_t)got[b * 34 + 2 + k], q);
        }
    }
}

static void check_tensor(tl_model *m, size_t t, tl_dtype got_type, const void *got, uint64_t nbytes) {
    const tl_tensor_info *ti = tl_model_tensor(m, t);
    size_t i = 0;
    while (i < N && strcmp(tensors[i].name, ti->name)) i++;
    assert_true(i < N);
    if (got_type != tensors[i].want)
        fail_msg("%s: kept as %s, the rules say %s", ti->name, tl_dtype_name(got_type),
                 tl_dtype_name(tensors[i].want));
    uint64_t want_bytes;
    assert_true(tl_dtype_nbytes(got_type, ti->n_elements, &want_bytes));
    assert_int_equal(nbytes, want_bytes);
    if (got_type == TL_DTYPE_Q8_0)
        check_q8_0(got, file_bytes(m, t), ti->n_elements, ti->name);
    else
        ref_check_converted(got_type, got, ti->dtype, file_bytes(m, t), ti->n_elements, ti->name);
}

static void test_load(void **state) {
    (void)state;
    char *dir, *path = write_model(&dir);
    tl_model *m = open_model(path);
    tl_load_options o;
    tl_load_options_init(&o);
    o.mode = TL_LOAD_BUFFERED;
    o.convert = true;
    o.dtype = DTYPE;
    o.type_rules = RULES;
    tl_load_result *r = NULL;
    if (tl_model_load(m, &o, &r)) fail_msg("%s", tl_last_error());
    for (size_t t = 0; t < tl_model_tensor_count(m); t++) {
        const tl_loaded_tensor *lt = tl_load_result_tensor(r, t);
        check_tensor(m, t, lt->dtype, lt->data, lt->nbytes);
    }
    tl_load_result_destroy(r);
    /* without dtype, a tensor no rule names keeps its type */
    o.convert = false;
    assert_int_equal(tl_model_load(m, &o, &r), TL_OK);
    size_t pos = tl_model_find(m, "cond.pos");
    assert_int_equal(tl_load_result_tensor(r, pos)->dtype, TL_DTYPE_F32);
    assert_int_equal(tl_load_result_tensor(r, tl_model_find(m, "model.a.weight"))->dtype,
                     TL_DTYPE_Q8_0);
    tl_load_result_destroy(r);
    tl_model_close(m);
    free(path);
    tu_tmpdir_rm(dir);
}

/* The plan counts the rules' bytes, and a session on it keeps exactly the load's bytes. */
static void test_plan_and_session(void **state) {
    (void)state;
    char *dir, *path = write_model(&dir);
    tl_model *m = open_model(path);
    uint64_t want = 0;
    for (size_t i = 0; i < N; i++) {
        uint64_t b;
        assert_true(tl_dtype_nbytes(tensors[i].want, (uint64_t)(tensors[i].rows * tensors[i].cols), &b));
        want += b;
    }
    tl_device *sim = tu_sim_add("rulesim", 8 << 20);
    tl_plan_device devs[2];
    memset(devs, 0, sizeof devs);
    snprintf(devs[0].name, sizeof devs[0].name, "rulesim");
    devs[0].is_gpu = true;
    devs[0].total = devs[0].free = 8 << 20;
    snprintf(devs[1].name, sizeof devs[1].name, "cpu");
    tl_plan_options po;
    tl_plan_options_init(&po);
    po.reserve = "diffusion=0,cond=0,vae=0,controlnet=0,other=0,diffusion2=0";
    po.type_rules = RULES;
    tl_plan *p = NULL;
    if (tl_plan_create_for_model(m, DTYPE, devs, 2, &po, &p)) fail_msg("%s", tl_last_error());
    assert_true(tl_plan_feasible(p));
    uint64_t planned = 0;
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        tl_plan_decision d;
        assert_int_equal(tl_plan_decision_of(p, (tl_component)c, &d, sizeof d), TL_OK);
        if (d.present) planned += d.bytes;
    }
    assert_int_equal(planned, want);

    tl_session_options so;
    tl_session_options_init(&so);
    so.convert = true;
    so.dtype = DTYPE;
    so.type_rules = RULES;
    tl_session *s = NULL;
    if (tl_session_create(m, p, &so, &s)) fail_msg("%s", tl_last_error());
    size_t all[N];
    for (size_t t = 0; t < N; t++) all[t] = t;
    tl_acquired *a = NULL;
    assert_int_equal(tl_session_acquire_tensors(s, all, N, 0, &a), TL_OK);
    uint64_t held = 0;
    for (size_t k = 0; k < tl_acquired_count(a); k++) {
        const tl_session_tensor *st = tl_acquired_tensor(a, k);
        tl_session_part part;
        assert_int_equal(tl_acquired_part(a, k, 0, &part, sizeof part), TL_OK);
        assert_int_equal(part.nbytes, st->info->nbytes); /* one part: the whole tensor */
        void *host = malloc(st->info->nbytes);
        assert_int_equal(tl_device_copy_from(sim, host, part.dptr, part.nbytes), TL_OK);
        check_tensor(m, st->index, st->info->dtype, host, st->info->nbytes);
        held += st->info->nbytes;
        free(host);
    }
    assert_int_equal(held, want);
    assert_int_equal(tl_session_release(s, a), TL_OK);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    tl_plan_destroy(p);
    tl_device_unregister(sim);
    tl_device_release(sim);
    tl_model_close(m);
    free(path);
    tu_tmpdir_rm(dir);
}

static void expect_bad(tl_model *m, const char *rules, const char *needle) {
    tl_load_options o;
    tl_load_options_init(&o);
    o.type_rules = rules;
    tl_load_result *r = NULL;
    assert_int_equal(tl_model_load(m, &o, &r), TL_ERR_INVALID_ARG);
    assert_null(r);
    if (!strstr(tl_last_error(), needle))
        fail_msg("rules '%s': '%s' does not name '%s'", rules, tl_last_error(), needle);
}

static void test_bad_rules(void **state) {
    (void)state;
    char *dir, *path = write_model(&dir);
    tl_model *m = open_model(path);
    expect_bad(m, "vae=f16,model", "'model'");
    expect_bad(m, "vae=f16,(mod=q8_0", "'(mod'");
    expect_bad(m, "vae=q4_k", "'vae=q4_k'");
    expect_bad(m, "=f16", "'=f16'");
    /* what would take regcomp's memory: a repetition of a repetition, deep bounds */
    expect_bad(m, "vae.bias++++++++++++++++++++=f16", "too complex");
    expect_bad(m, "((((v{9}){9}){9}){9}){9}=f16", "too complex");
    expect_bad(m, "v{65}=f16", "too complex");
    expect_bad(m, "((((((((((((((((((((((((v+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+=f16",
               "too complex"); /* repetitions through groups */
    expect_bad(m, "[]a[]b++++++++++++++++++++++++=f16", "too complex"); /* after "[]a[]" */
    expect_bad(m, "[[:alpha:]]x++++++++++++++++++++++++=f16", "too complex");
    expect_bad(m, "v)++++++++++++++++++++++++=f16", "too complex"); /* a literal ')' */
    expect_bad(m, "(v)\\1=f16", "back-reference");
    /* what would take regexec's time: a repetition of what may match nothing */
    expect_bad(m, "^(.*)*(.*)*(.*)*(.*)*(.*)*(.*)*(.*)*(.*)*(.*)*(.*)*(.*)*(.*)*w=f16", "nothing");
    expect_bad(m, "\\b.********************************************w*=f16", "nothing");
    expect_bad(m, "(v|)+=f16", "nothing");
    expect_bad(m, "(a?b?)+=f16", "nothing");
    tl_load_options ok;
    tl_load_options_init(&ok);
    ok.type_rules =
        "blk\\.\\d{2}\\.=f16,(vae|model)\\.[a-z]+=bf16,[]x[]+=f16,^(m.*)*(a?b)+x{2}{3}=f16"; /* bounded,
                                                                                                fine
                                                                                              */
    tl_load_result *r = NULL;
    if (tl_model_load(m, &ok, &r)) fail_msg("%s", tl_last_error());
    tl_load_result_destroy(r);
    /* a plan from a summary sees no names */
    tl_plan_summary sum;
    assert_int_equal(tl_plan_summary_from_model(m, TL_DTYPE_INVALID, &sum), TL_OK);
    tl_plan_device dev;
    memset(&dev, 0, sizeof dev);
    snprintf(dev.name, sizeof dev.name, "cpu");
    tl_plan_options po;
    tl_plan_options_init(&po);
    po.type_rules = "vae=f16";
    tl_plan *p = NULL;
    assert_int_equal(tl_plan_create(&sum, &dev, 1, &po, &p), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "tl_plan_create_for_model"));
    tl_plan_summary_clear(&sum);
    /* and a session refuses them at creation */
    po.type_rules = "va(e=f16";
    assert_int_equal(tl_plan_create_for_model(m, TL_DTYPE_INVALID, &dev, 1, &po, &p),
                     TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "'va(e'"));
    tl_model_close(m);
    free(path);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_load),
                                       cmocka_unit_test(test_plan_and_session),
                                       cmocka_unit_test(test_bad_rules)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
