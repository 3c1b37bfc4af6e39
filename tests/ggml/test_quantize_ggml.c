/*
 * test_quantize_ggml.c — quantize-on-load against ggml's own quantizer (the
 * ggml build tierload runs with): F32 / F16 / BF16 rows quantized to Q8_0
 * and Q4_0 by tl_convert are byte for byte what ggml_quantize_chunk writes
 * (sources turned into floats by ggml's own row converters), on random rows
 * and on the blocks where the rules have edges (zeros, one large element,
 * ties between +m and -m, exact halves, subnormals); dequantizing gives what
 * ggml's to_float gives; a load with dtype Q8_0 / Q4_0 quantizes exactly the
 * tensors stable-diffusion.cpp's --type does and nothing else; a NaN is
 * refused naming the element.
 */
#include "st_writer.h"
#include "testutil.h"

#include "ggml.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define N_BLOCKS 96
#define N (N_BLOCKS * 32)

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float rnd(void) { /* roughly normal, with a spread of magnitudes */
    float s = 0;
    for (int i = 0; i < 4; i++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        s += (float)(rng >> 40) / (float)(1 << 24) - 0.5f;
    }
    return s * (float)(1u << (rng % 12)) / 64.0f;
}

/* Fill x[N] with random blocks and the edge cases, one per block. */
static void fill(float *x) {
    for (int i = 0; i < N; i++)
        x[i] = rnd();
    memset(x, 0, 7 * 32 * sizeof *x); /* blocks 0..6 hold only what is set here */
    x[32 + 5] = 1000.0f;              /* block 1: one large element */
    x[64 + 3] = 2.0f;                 /* block 2: +m and -m tie: the first wins */
    x[64 + 9] = -2.0f;
    x[96 + 0] = -3.0f; /* block 3: largest magnitude negative */
    for (int j = 0; j < 32; j++)
        x[128 + j] = (float)(j - 16) * 0.5f; /* block 4: halves */
    for (int j = 0; j < 32; j++)
        x[160 + j] = ldexpf((float)(j + 1), -140); /* block 5: subnormal */
    x[192 + 31] = 127.0f; /* block 6: x / d exactly on the grid, and 63.5 = a tie */
    x[192 + 0] = 63.5f;
    x[192 + 1] = -63.5f;
}

static enum ggml_type gtype(tl_dtype t) {
    return t == TL_DTYPE_Q8_0 ? GGML_TYPE_Q8_0 : GGML_TYPE_Q4_0;
}

/* src (type from) as floats, by ggml's own converters. */
static void to_f32_by_ggml(tl_dtype from, const void *src, float *out, int64_t n) {
    if (from == TL_DTYPE_F32)
        memcpy(out, src, (size_t)n * 4);
    else if (from == TL_DTYPE_F16)
        ggml_fp16_to_fp32_row(src, out, n);
    else
        ggml_bf16_to_fp32_row(src, out, n);
}

/* x as type from (F32, F16 or BF16), by ggml's own converters. */
static void *as_type(tl_dtype from, const float *x, int64_t n) {
    void *p = malloc((size_t)n * 4);
    if (from == TL_DTYPE_F32)
        memcpy(p, x, (size_t)n * 4);
    else if (from == TL_DTYPE_F16)
        ggml_fp32_to_fp16_row(x, p, n);
    else
        ggml_fp32_to_bf16_row_ref(x, p, n);
    return p;
}

static void test_rows_match_ggml(void **state) {
    (void)state;
    static const tl_dtype froms[] = {TL_DTYPE_F32, TL_DTYPE_F16, TL_DTYPE_BF16};
    static const tl_dtype tos[] = {TL_DTYPE_Q8_0, TL_DTYPE_Q4_0};
    float *x = malloc(N * sizeof *x), *xf = malloc(N * sizeof *xf);
    fill(x);
    for (size_t a = 0; a < 3; a++)
        for (size_t b = 0; b < 2; b++) {
            tl_dtype from = froms[a], to = tos[b];
            void *src = as_type(from, x, N);
            to_f32_by_ggml(from, src, xf, N);
            size_t bsz = ggml_row_size(gtype(to), 32);
            unsigned char *want = malloc(bsz * N_BLOCKS), *got = malloc(bsz * N_BLOCKS);
            /* 3 rows of N / 3 elements: rows are whole blocks */
            size_t wrote = ggml_quantize_chunk(gtype(to), xf, want, 0, 3, N / 3, NULL);
            assert_int_equal(wrote, bsz * N_BLOCKS);
            assert_int_equal(tl_convert(to, got, from, src, N), TL_OK);
            for (int k = 0; k < N_BLOCKS; k++)
                if (memcmp(got + k * bsz, want + k * bsz, bsz))
                    fail_msg("%s -> %s: block %d differs from ggml's", tl_dtype_name(from),
                             tl_dtype_name(to), k);
            /* and back: ggml's to_float, then rounded once to each float type as ggml rounds */
            float *back_g = malloc(N * sizeof *back_g), *back_t = malloc(N * sizeof *back_t);
            ggml_get_type_traits(gtype(to))->to_float(want, back_g, N);
            assert_int_equal(tl_convert(TL_DTYPE_F32, back_t, to, got, N), TL_OK);
            assert_memory_equal(back_t, back_g, N * sizeof *back_g);
            uint16_t *h_t = malloc(N * 2), *h_g = malloc(N * 2);
            ggml_fp32_to_fp16_row(back_g, (ggml_fp16_t *)h_g, N);
            assert_int_equal(tl_convert(TL_DTYPE_F16, h_t, to, got, N), TL_OK);
            assert_memory_equal(h_t, h_g, N * 2);
            free(h_t);
            free(h_g);
            free(back_g);
            free(back_t);
            free(want);
            free(got);
            free(src);
        }
    /* not a whole number of blocks; a NaN; a pair that has no conversion */
    unsigned char q[34 * 2];
    assert_int_equal(tl_convert(TL_DTYPE_Q8_0, q, TL_DTYPE_F32, x, 33), TL_ERR_INVALID_ARG);
    x[40] = NAN;
    assert_int_equal(tl_convert(TL_DTYPE_Q8_0, q, TL_DTYPE_F32, x, 64), TL_ERR_UNSUPPORTED);
    assert_non_null(strstr(tl_last_error(), "element 40"));
    assert_false(tl_convert_supported(TL_DTYPE_Q4_K, TL_DTYPE_Q8_0));
    free(x);
    free(xf);
}

/* A load with dtype Q8_0 / Q4_0: the 2-D weights with whole-block rows are quantized exactly as
 * ggml quantizes the file's values; the rest (1-D, a bias, an embedding, rows of 48) stay. */
static void test_load_quantizes_like_sdcpp(void **state) {
    (void)state;
    static const struct {
        const char *name;
        uint32_t n_dims;
        int64_t shape[2];
        bool quantized; /* by stable-diffusion.cpp's --type rule, written out by hand */
    } ts[] = {
        {"model.diffusion_model.input_blocks.1.0.in_layers.2.weight", 2, {64, 96}, true},
        {"model.diffusion_model.input_blocks.1.0.in_layers.2.bias", 1, {64}, false},
        {"model.diffusion_model.input_blocks.1.1.proj_in.weight", 2, {32, 48}, false},
        {"model.diffusion_model.out.0.weight", 1, {96}, false},
        {"model.diffusion_model.time_embed.0.weight", 2, {64, 64}, false},
        {"model.diffusion_model.middle_block.1.proj.bias", 2, {32, 32}, false},
        {"model.diffusion_model.output_blocks.0.0.skip.weight", 2, {16, 256}, true},
    };
    size_t n = sizeof ts / sizeof ts[0];
    char *dir = tu_tmpdir();
    static const char *const dts[] = {"F32", "F16", "BF16"};
    static const tl_dtype dtv[] = {TL_DTYPE_F32, TL_DTYPE_F16, TL_DTYPE_BF16};
    for (int a = 0; a < 3; a++) {
        sw_tensor sw[8];
        for (size_t i = 0; i < n; i++)
            sw[i] = (sw_tensor){ts[i].name, dts[a], ts[i].n_dims, {ts[i].shape[0], ts[i].shape[1]}};
        size_t len;
        uint8_t *img = sw_build(sw, n, NULL, true, &len);
        char *p = tu_path(dir, "q.safetensors");
        assert_true(sw_write_file(p, img, len));
        /* replace the pattern bytes with finite values */
        tl_model *m = NULL;
        const char *paths[] = {p};
        assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
        for (size_t i = 0; i < n; i++) {
            const tl_tensor_info *t = tl_model_tensor(m, tl_model_find(m, ts[i].name));
            float *x = malloc(t->n_elements * sizeof *x);
            for (uint64_t k = 0; k < t->n_elements; k++)
                x[k] = rnd();
            void *v = as_type(dtv[a], x, (int64_t)t->n_elements);
            memcpy(img + t->offset, v, t->nbytes);
            free(v);
            free(x);
        }
        tl_model_close(m);
        assert_true(sw_write_file(p, img, len));
        assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
        for (int b = 0; b < 2; b++) {
            tl_dtype to = b ? TL_DTYPE_Q4_0 : TL_DTYPE_Q8_0;
            tl_load_options o;
            tl_load_options_init(&o);
            o.convert = true;
            o.dtype = to;
            o.verify = true; /* the converted bytes checked against a conversion of the file's */
            tl_load_result *r = NULL;
            assert_int_equal(tl_model_load(m, &o, &r), TL_OK);
            for (size_t i = 0; i < n; i++) {
                size_t ti = tl_model_find(m, ts[i].name);
                const tl_tensor_info *t = tl_model_tensor(m, ti);
                const tl_loaded_tensor *lt = tl_load_result_tensor(r, ti);
                const unsigned char *file = img + t->offset;
                if (!ts[i].quantized) {
                    if (lt->dtype != dtv[a])
                        fail_msg("%s: converted to %s", t->name, tl_dtype_name(lt->dtype));
                    assert_memory_equal(lt->data, file, t->nbytes);
                    continue;
                }
                assert_int_equal(lt->dtype, to);
                float *xf = malloc(t->n_elements * sizeof *xf);
                to_f32_by_ggml(dtv[a], file, xf, (int64_t)t->n_elements);
                size_t want_n = ggml_row_size(gtype(to), t->shape[1]) * (size_t)t->shape[0];
                assert_int_equal(lt->nbytes, want_n);
                unsigned char *want = malloc(want_n);
                ggml_quantize_chunk(gtype(to), xf, want, 0, t->shape[0], t->shape[1], NULL);
                if (memcmp(lt->data, want, want_n))
                    fail_msg("%s as %s: differs from ggml's quantizer", t->name, tl_dtype_name(to));
                free(want);
                free(xf);
            }
            tl_load_result_destroy(r);
            /* the plan counts what the load made */
            tl_plan_summary s;
            assert_int_equal(tl_plan_summary_from_model(m, to, &s), TL_OK);
            uint64_t planned = 0, want = 0;
            for (int c = 0; c < TL_COMP_COUNT; c++)
                planned += s.comp[c].bytes;
            for (size_t i = 0; i < n; i++) {
                const tl_tensor_info *t = tl_model_tensor(m, tl_model_find(m, ts[i].name));
                want += ts[i].quantized
                            ? ggml_row_size(gtype(to), t->shape[1]) * (uint64_t)t->shape[0]
                            : t->nbytes;
            }
            assert_int_equal(planned, want);
            tl_plan_summary_clear(&s);
        }
        tl_model_close(m);
        free(p);
        free(img);
    }
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_match_ggml),
        cmocka_unit_test(test_load_quantizes_like_sdcpp),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
