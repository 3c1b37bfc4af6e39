/*
 * test_groups.c — the model's (component, layer) grouping and the planner
 * summary built on it, on a small SD-style checkpoint whose expected groups
 * are written out by hand below, and on layer keys that are prefixes of each
 * other ("model.layers.1" and "model.layers.10").
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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

/* The layers of a model whose tensors are named[0..n) in this order, each one a 4-byte F32. */
static tl_model *open_names(const char *dir, const char *const *names, size_t n) {
    char *p = tu_path(dir, "k.safetensors");
    st_tensor *t = calloc(n, sizeof *t);
    for (size_t i = 0; i < n; i++)
        t[i] = (st_tensor){names[i], "F32", 1, 4, NULL, fill, NULL};
    st_write(p, t, n);
    free(t);
    tl_model *m = NULL;
    const char *paths[] = {p};
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    free(p);
    return m;
}

/*
 * Layer keys that are prefixes of one another are different layers. The
 * first set is chosen so that, in the grouping's 64-slot table, the key
 * "model.layers.1" meets "model.layers.10" while probing past layers 56 and
 * 17 (a comparison that ignored the keys' lengths would merge them); the
 * second mixes 1, 10, 100, 11, 110, ... in an order where every short key
 * comes after its longer relatives.
 */
static void test_prefix_keys(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    const char *a[] = {"model.layers.10.w", "model.layers.56.w", "model.layers.17.w",
                       "model.layers.1.w", "model.layers.10.b"};
    tl_model *m = open_names(dir, a, 5);
    assert_int_equal(tl_model_layer_count(m, TL_COMP_OTHER), 4);
    const size_t want[] = {1, 3, 2, 0, 1}; /* numbered in compute order: 1, 10, 17, 56 */
    for (size_t i = 0; i < 5; i++)
        if (tl_model_tensor_layer(m, find(m, a[i])) != want[i])
            fail_msg("%s: layer %zu, want %zu", a[i], tl_model_tensor_layer(m, find(m, a[i])),
                     want[i]);
    const size_t *idx;
    assert_int_equal(tl_model_layer_tensors(m, TL_COMP_OTHER, 0, &idx), 1);
    assert_int_equal(idx[0], find(m, "model.layers.1.w"));
    tl_model_close(m);

    /* 1..9 after 10..99 and 100..199 in the file (each digit string its own layer) */
    static char names[300][40];
    const char *b[300];
    size_t n = 0;
    for (int k = 100; k < 200; k++)
        snprintf(names[n], sizeof names[n], "blk.%d.w", k), n++;
    for (int k = 10; k < 100; k++)
        snprintf(names[n], sizeof names[n], "blk.%d.w", k), n++;
    for (int k = 0; k < 10; k++)
        snprintf(names[n], sizeof names[n], "blk.%d.w", k), n++;
    for (size_t i = 0; i < n; i++)
        b[i] = names[i];
    m = open_names(dir, b, n);
    assert_int_equal(tl_model_layer_count(m, TL_COMP_OTHER), n);
    for (size_t i = 0; i < n; i++) { /* blk.K is layer K, whatever the file's order */
        size_t k = (size_t)atoi(b[i] + 4);
        if (tl_model_tensor_layer(m, find(m, b[i])) != k)
            fail_msg("%s: layer %zu, want %zu", b[i], tl_model_tensor_layer(m, find(m, b[i])), k);
    }
    tl_model_close(m);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_grouping),
                                       cmocka_unit_test(test_prefix_keys)};
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
