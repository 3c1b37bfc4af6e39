/*
 * test_groups.c — the model's (component, layer) grouping and the planner
 * summary built on it, on a small SD-style checkpoint whose expected groups
 * are written out by hand below.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "helpers/testutil.h"
#include "test_load_st.h"
#include "tierload.h"

#define UNET "model.diffusion_model."
static const st_tensor files[] = {
    {UNET "input_blocks.4.0.weight", "F32", 10, 4, NULL, NULL, NULL}, /* diffusion layer 0 */
    {UNET "time_embed.0.weight", "F32", 3, 4, NULL, NULL, NULL},      /* diffusion other */
    {UNET "output_blocks.4.0.weight", "F32", 7, 4, NULL, NULL, NULL}, /* diffusion layer 2 */
    {UNET "input_blocks.4.1.bias", "F16", 5, 2, NULL, NULL, NULL},    /* diffusion layer 0 */
    {"first_stage_model.decoder.up.0.block.1.w", "F32", 2, 4, NULL, NULL, NULL}, /* vae */
    {UNET "input_blocks.7.0.weight", "F32", 1, 4, NULL, NULL, NULL}, /* diffusion layer 1 */
    {"cond_stage_model.transformer.text_model.encoder.layers.0.w", "F16", 4, 2, NULL, NULL,
     NULL}, /* cond layer 0 */
};

static void fill(void *buf, uint64_t off, uint64_t len, void *ctx) {
    (void)ctx;
    for (uint64_t i = 0; i < len; i++)
        ((unsigned char *)buf)[i] = (unsigned char)(off + i);
}

static size_t find(const tl_model *m, const char *name) {
    int64_t i = tl_model_find(m, name);
    assert_true(i >= 0);
    return (size_t)i;
}

static void test_grouping(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *p = tu_path(dir, "m.safetensors");
    st_tensor t[7];
    for (int i = 0; i < 7; i++) {
        t[i] = files[i];
        t[i].fill = fill;
    }
    st_write(p, t, 7);
    tl_model *m = NULL;
    const char *paths[] = {p};
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);

    /* diffusion: layers input_blocks.4 (2 tensors), input_blocks.7, output_blocks.4 (compute
       order, not the file's) */
    assert_int_equal(tl_model_layer_count(m, TL_COMP_DIFFUSION), 3);
    const size_t *idx;
    assert_int_equal(tl_model_layer_tensors(m, TL_COMP_DIFFUSION, 0, &idx), 2);
    assert_int_equal(idx[0], find(m, UNET "input_blocks.4.0.weight"));
    assert_int_equal(idx[1], find(m, UNET "input_blocks.4.1.bias"));
    assert_int_equal(tl_model_layer_tensors(m, TL_COMP_DIFFUSION, 1, &idx), 1);
    assert_int_equal(idx[0], find(m, UNET "input_blocks.7.0.weight"));
    assert_int_equal(tl_model_layer_tensors(m, TL_COMP_DIFFUSION, 2, &idx), 1);
    assert_int_equal(idx[0], find(m, UNET "output_blocks.4.0.weight"));
    assert_int_equal(tl_model_layer_tensors(m, TL_COMP_DIFFUSION, 3, &idx), 0);
    assert_null(idx);
    assert_int_equal(tl_model_other_tensors(m, TL_COMP_DIFFUSION, &idx), 1);
    assert_int_equal(idx[0], find(m, UNET "time_embed.0.weight"));
    assert_int_equal(tl_model_tensor_layer(m, find(m, UNET "output_blocks.4.0.weight")), 2);
    assert_int_equal(tl_model_tensor_layer(m, find(m, UNET "time_embed.0.weight")), TL_NOT_FOUND);
    /* cond: one layer; vae: its block tensor */
    assert_int_equal(tl_model_layer_count(m, TL_COMP_COND), 1);
    assert_int_equal(tl_model_layer_count(m, TL_COMP_CONTROLNET), 0);
    assert_int_equal(tl_model_other_tensors(m, TL_COMP_CONTROLNET, NULL), 0);

    /* every tensor is in exactly one group */
    size_t seen[7] = {0}, total = 0;
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        size_t nl = tl_model_layer_count(m, (tl_component)c);
        for (size_t k = 0; k <= nl; k++) {
            size_t n = k < nl ? tl_model_layer_tensors(m, (tl_component)c, k, &idx)
                              : tl_model_other_tensors(m, (tl_component)c, &idx);
            for (size_t j = 0; j < n; j++) {
                assert_true(idx[j] < 7);
                seen[idx[j]]++;
                total++;
            }
        }
    }
    assert_int_equal(total, 7);
    for (int i = 0; i < 7; i++)
        assert_int_equal(seen[i], 1);

    /* the planner's summary: diffusion layers 40+10, 4, 28 bytes; other 12 */
    tl_plan_summary s;
    assert_int_equal(tl_plan_summary_from_model(m, TL_DTYPE_INVALID, &s), TL_OK);
    assert_int_equal(s.comp[TL_COMP_DIFFUSION].n_layers, 3);
    assert_int_equal(s.comp[TL_COMP_DIFFUSION].layers[0], 50);
    assert_int_equal(s.comp[TL_COMP_DIFFUSION].layers[1], 4);
    assert_int_equal(s.comp[TL_COMP_DIFFUSION].layers[2], 28);
    assert_int_equal(s.comp[TL_COMP_DIFFUSION].other_bytes, 12);
    assert_int_equal(s.comp[TL_COMP_DIFFUSION].bytes, 94);
    assert_int_equal(s.comp[TL_COMP_COND].bytes, 8);
    tl_plan_summary_clear(&s);

    tl_model_close(m);
    free(p);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_grouping)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
