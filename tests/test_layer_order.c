/*
 * test_layer_order.c — layers in compute order whatever the order of names in
 * the file: safetensors files whose tensor names are sorted byte-wise, as
 * Hugging Face's safetensors writer sorts them (input_blocks.10 before
 * input_blocks.2, blk.10 before blk.9, decoder before encoder), against
 * orders written out by hand from the models' forward passes (ldm UNet:
 * input_blocks, middle_block, output_blocks; ldm VAE: encoder levels up,
 * decoder levels down; Flux: double_blocks, single_blocks). Also: the
 * layer keys and their lookup (blk.1 is never blk.10), tl_tensor_info.layer
 * equal to the grouping's index, and a session acquiring layer k gets the
 * tensors of key k.
 */
#include "testutil.h"

#include "st_writer.h"

#include <stdlib.h>
#include <string.h>

static int by_name(const void *a, const void *b) {
    return strcmp(((const sw_tensor *)a)->name, ((const sw_tensor *)b)->name);
}

/* A safetensors file of these names (F16 [4, 8] each), written in byte-wise sorted order. */
static char *write_sorted(const char *dir, const char *file, const char *const *names, size_t n) {
    sw_tensor *t = calloc(n, sizeof *t);
    assert_non_null(t);
    for (size_t i = 0; i < n; i++)
        t[i] = (sw_tensor){names[i], "F16", 2, {4, 8}};
    qsort(t, n, sizeof *t, by_name);
    size_t len;
    uint8_t *img = sw_build(t, n, NULL, true, &len);
    char *p = tu_path(dir, file);
    assert_true(sw_write_file(p, img, len));
    free(img);
    free(t);
    return p;
}

/* Component c's layer keys are exactly want, in this order; each tensor's layer agrees. */
static void expect_order(const tl_model *m, tl_component c, const char *const *want, size_t n) {
    size_t nl = tl_model_layer_count(m, c);
    if (nl != n) fail_msg("%s: %zu layers, expected %zu", tl_component_name(c), nl, n);
    for (size_t k = 0; k < n; k++) {
        const char *key = tl_model_layer_key(m, c, k);
        if (!key || strcmp(key, want[k]))
            fail_msg("%s layer %zu is '%s', expected '%s'", tl_component_name(c), k,
                     key ? key : "(null)", want[k]);
        assert_int_equal(tl_model_layer_find(m, c, want[k]), k);
        const size_t *idx;
        size_t nt = tl_model_layer_tensors(m, c, k, &idx);
        assert_true(nt > 0);
        for (size_t j = 0; j < nt; j++) {
            const tl_tensor_info *t = tl_model_tensor(m, idx[j]);
            assert_int_equal(strncmp(t->name, want[k], strlen(want[k])), 0);
            assert_int_equal(t->name[strlen(want[k])], '.');
            assert_int_equal(t->layer, (int32_t)k);
            assert_int_equal(tl_model_tensor_layer(m, idx[j]), k);
        }
    }
    assert_null(tl_model_layer_key(m, c, n));
}

#define U "model.diffusion_model."
#define V "first_stage_model."
#define C "cond_stage_model.transformer.text_model.encoder."

static const char *const sd_names[] = {
    U "time_embed.0.weight",
    U "input_blocks.0.0.weight",
    U "input_blocks.1.0.in_layers.2.weight",
    U "input_blocks.1.1.proj_in.weight",
    U "input_blocks.2.0.in_layers.2.weight",
    U "input_blocks.10.0.in_layers.2.weight",
    U "input_blocks.11.0.in_layers.2.weight",
    U "middle_block.0.in_layers.2.weight",
    U "middle_block.1.proj_in.weight",
    U "middle_block.2.in_layers.2.weight",
    U "output_blocks.0.0.in_layers.2.weight",
    U "output_blocks.1.0.in_layers.2.weight",
    U "output_blocks.2.1.conv.weight",
    U "output_blocks.10.0.in_layers.2.weight",
    U "out.2.weight",
    V "encoder.conv_in.weight",
    V "encoder.down.0.block.0.conv1.weight",
    V "encoder.down.0.block.1.conv1.weight",
    V "encoder.down.1.block.0.conv1.weight",
    V "encoder.mid.block_1.conv1.weight",
    V "decoder.mid.block_1.conv1.weight",
    V "decoder.up.0.block.0.conv1.weight",
    V "decoder.up.0.block.2.conv1.weight",
    V "decoder.up.1.block.0.conv1.weight",
    V "decoder.up.1.block.1.conv1.weight",
    V "decoder.conv_out.weight",
    C "layers.0.mlp.fc1.weight",
    C "layers.1.mlp.fc1.weight",
    C "layers.2.mlp.fc1.weight",
    C "layers.10.mlp.fc1.weight",
    C "layers.11.mlp.fc1.weight",
};

/* ldm's UNet runs input_blocks 0..11, middle_block 0..2 (one key: its number follows), then
   output_blocks 0..11; its VAE encodes level 0 up, then decodes from the last level down. */
static const char *const sd_unet[] = {
    U "input_blocks.0", U "input_blocks.1", U "input_blocks.2", U "input_blocks.10",
    U "input_blocks.11", U "middle_block.0", U "middle_block.1", U "middle_block.2",
    U "output_blocks.0", U "output_blocks.1", U "output_blocks.2", U "output_blocks.10",
};
static const char *const sd_vae[] = {
    V "encoder.down.0.block.0", V "encoder.down.0.block.1", V "encoder.down.1.block.0",
    V "decoder.up.1.block.0",   V "decoder.up.1.block.1",   V "decoder.up.0.block.0",
    V "decoder.up.0.block.2",
};
static const char *const sd_cond[] = {C "layers.0", C "layers.1", C "layers.2", C "layers.10",
                                      C "layers.11"};

static const char *const flux_names[] = {
    "img_in.weight",
    "double_blocks.0.img_attn.qkv.weight",
    "double_blocks.1.img_attn.qkv.weight",
    "double_blocks.2.img_attn.qkv.weight",
    "double_blocks.10.img_attn.qkv.weight",
    "double_blocks.18.txt_mlp.0.weight",
    "single_blocks.0.linear1.weight",
    "single_blocks.1.linear1.weight",
    "single_blocks.9.linear1.weight",
    "single_blocks.10.linear1.weight",
    "single_blocks.37.linear2.weight",
    "final_layer.linear.weight",
    /* a llama.cpp-named LLM beside it: component other */
    "blk.0.attn_q.weight",
    "blk.1.attn_q.weight",
    "blk.9.attn_q.weight",
    "blk.10.attn_q.weight",
    "blk.11.ffn_up.weight",
};
static const char *const flux_order[] = {
    "double_blocks.0", "double_blocks.1", "double_blocks.2", "double_blocks.10",
    "double_blocks.18", "single_blocks.0", "single_blocks.1", "single_blocks.9",
    "single_blocks.10", "single_blocks.37",
};
static const char *const blk_order[] = {"blk.0", "blk.1", "blk.9", "blk.10", "blk.11"};

#define N(a) (sizeof a / sizeof a[0])

static void test_sd_checkpoint_sorted_names(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *p = write_sorted(dir, "sd.safetensors", sd_names, N(sd_names));
    tl_model *m = NULL;
    const char *paths[] = {p};
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    /* the file really is in byte order: input_blocks.10 comes before input_blocks.2 */
    assert_true(tl_model_find(m, U "input_blocks.10.0.in_layers.2.weight") <
                tl_model_find(m, U "input_blocks.2.0.in_layers.2.weight"));
    assert_true(tl_model_tensor(m, 0)->offset < tl_model_tensor(m, 1)->offset);
    expect_order(m, TL_COMP_DIFFUSION, sd_unet, N(sd_unet));
    expect_order(m, TL_COMP_VAE, sd_vae, N(sd_vae));
    expect_order(m, TL_COMP_COND, sd_cond, N(sd_cond));
    /* tensors outside every layer */
    const tl_tensor_info *t = tl_model_tensor(m, (size_t)tl_model_find(m, U "time_embed.0.weight"));
    assert_int_equal(t->layer, -1);
    t = tl_model_tensor(m, (size_t)tl_model_find(m, V "encoder.mid.block_1.conv1.weight"));
    assert_int_equal(t->layer, -1);
    /* keys by their tail after a dot; a tail several keys share finds none */
    assert_int_equal(tl_model_layer_find(m, TL_COMP_DIFFUSION, "input_blocks.1"), 1);
    assert_int_equal(tl_model_layer_find(m, TL_COMP_DIFFUSION, "input_blocks.11"), 4);
    assert_int_equal(tl_model_layer_find(m, TL_COMP_DIFFUSION, "output_blocks.10"), 11);
    assert_int_equal(tl_model_layer_find(m, TL_COMP_DIFFUSION, "0"), TL_NOT_FOUND);
    assert_int_equal(tl_model_layer_find(m, TL_COMP_DIFFUSION, "nput_blocks.1"), TL_NOT_FOUND);
    assert_int_equal(tl_model_layer_find(m, TL_COMP_DIFFUSION, "input_blocks.3"), TL_NOT_FOUND);
    assert_int_equal(tl_model_layer_find(m, TL_COMP_VAE, U "input_blocks.1"), TL_NOT_FOUND);

    /* a session speaks of the same layers: acquiring diffusion layer 3 gives input_blocks.10 */
    tl_plan_summary sum;
    assert_int_equal(tl_plan_summary_from_model(m, TL_DTYPE_INVALID, &sum), TL_OK);
    tl_plan_device devs[TL_PLAN_MAX_DEVICES];
    size_t nd;
    assert_int_equal(tl_plan_parse_devices("cpu=1G", devs, TL_PLAN_MAX_DEVICES, &nd), TL_OK);
    tl_plan *plan = NULL;
    assert_int_equal(tl_plan_create(&sum, devs, nd, NULL, &plan), TL_OK);
    tl_session *s = NULL;
    assert_int_equal(tl_session_create(m, plan, NULL, &s), TL_OK);
    for (size_t k = 0; k < N(sd_unet); k++) {
        tl_acquired *a = NULL;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, k, k + 1, false, &a), TL_OK);
        assert_true(tl_acquired_count(a) > 0);
        for (size_t j = 0; j < tl_acquired_count(a); j++) {
            const char *name = tl_acquired_tensor(a, j)->info->name;
            if (strncmp(name, sd_unet[k], strlen(sd_unet[k])) || name[strlen(sd_unet[k])] != '.')
                fail_msg("session layer %zu holds %s, expected %s", k, name, sd_unet[k]);
        }
        tl_session_release(s, a);
    }
    tl_session_destroy(s);
    tl_plan_destroy(plan);
    tl_plan_summary_clear(&sum);
    tl_model_close(m);
    free(p);
    tu_tmpdir_rm(dir);
}

static void test_flux_and_llm_sorted_names(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *p = write_sorted(dir, "flux.safetensors", flux_names, N(flux_names));
    tl_model *m = NULL;
    const char *paths[] = {p};
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    expect_order(m, TL_COMP_DIFFUSION, flux_order, N(flux_order));
    expect_order(m, TL_COMP_OTHER, blk_order, N(blk_order));
    /* compared with their length: blk.1 is not blk.10 or blk.11 */
    assert_int_equal(tl_model_layer_find(m, TL_COMP_OTHER, "blk.1"), 1);
    assert_int_equal(tl_model_layer_find(m, TL_COMP_OTHER, "blk.10"), 3);
    assert_int_equal(tl_model_layer_find(m, TL_COMP_OTHER, "blk.2"), TL_NOT_FOUND);
    assert_int_equal(tl_model_layer_find(m, TL_COMP_OTHER, "blk."), TL_NOT_FOUND);
    assert_int_equal(tl_model_layer_find(m, TL_COMP_OTHER, ""), TL_NOT_FOUND);
    assert_int_equal(tl_model_layer_find(m, TL_COMP_OTHER, NULL), TL_NOT_FOUND);
    assert_int_equal(tl_model_layer_find(NULL, TL_COMP_OTHER, "blk.1"), TL_NOT_FOUND);
    assert_null(tl_model_layer_key(m, TL_COMP_COUNT, 0));
    assert_null(tl_model_layer_key(NULL, TL_COMP_OTHER, 0));
    /* the planner's summary lists the layers in the same order: single_blocks.37 is last */
    tl_plan_summary sum;
    assert_int_equal(tl_plan_summary_from_model(m, TL_DTYPE_INVALID, &sum), TL_OK);
    assert_int_equal(sum.comp[TL_COMP_DIFFUSION].n_layers, N(flux_order));
    tl_plan_summary_clear(&sum);
    tl_model_close(m);
    free(p);
    tu_tmpdir_rm(dir);
}

/*
 * diffusers' Flux transformer runs transformer_blocks (double) before
 * single_transformer_blocks, which sorts first by name; an ldm ControlNet runs
 * its input_hint_block before its input_blocks.
 */
static void test_diffusers_flux_and_controlnet_sorted_names(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    static const char *const names[] = {
        "transformer.x_embedder.weight",
        "transformer.transformer_blocks.0.attn.to_q.weight",
        "transformer.transformer_blocks.1.attn.to_q.weight",
        "transformer.transformer_blocks.10.attn.to_q.weight",
        "transformer.single_transformer_blocks.0.proj_mlp.weight",
        "transformer.single_transformer_blocks.2.proj_mlp.weight",
        "transformer.single_transformer_blocks.11.proj_mlp.weight",
        "control_model.input_hint_block.0.weight",
        "control_model.input_hint_block.14.weight",
        "control_model.input_blocks.0.0.weight",
        "control_model.input_blocks.11.0.in_layers.2.weight",
        "control_model.middle_block.1.proj_in.weight",
    };
    char *p = write_sorted(dir, "dflux.safetensors", names, N(names));
    tl_model *m = NULL;
    const char *paths[] = {p};
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    static const char *const dit[] = {
        "transformer.transformer_blocks.0",         "transformer.transformer_blocks.1",
        "transformer.transformer_blocks.10",        "transformer.single_transformer_blocks.0",
        "transformer.single_transformer_blocks.2",  "transformer.single_transformer_blocks.11",
    };
    static const char *const cn[] = {
        "control_model.input_hint_block.0", "control_model.input_hint_block.14",
        "control_model.input_blocks.0",     "control_model.input_blocks.11",
        "control_model.middle_block.1",
    };
    expect_order(m, TL_COMP_DIFFUSION, dit, N(dit));
    expect_order(m, TL_COMP_CONTROLNET, cn, N(cn));
    tl_model_close(m);
    free(p);
    tu_tmpdir_rm(dir);
}

/* Families the table does not know keep their first appearance in the file. */
static void test_unknown_families_keep_file_order(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    /* written in this order (not sorted): zeta_blocks first, then alpha_blocks */
    const sw_tensor t[] = {{"zeta_blocks.1.w", "F16", 1, {4}},
                           {"alpha_blocks.0.w", "F16", 1, {4}},
                           {"zeta_blocks.0.w", "F16", 1, {4}}};
    size_t len;
    uint8_t *img = sw_build(t, 3, NULL, true, &len);
    char *p = tu_path(dir, "u.safetensors");
    assert_true(sw_write_file(p, img, len));
    free(img);
    tl_model *m = NULL;
    const char *paths[] = {p};
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    static const char *const want[] = {"zeta_blocks.0", "zeta_blocks.1", "alpha_blocks.0"};
    expect_order(m, TL_COMP_OTHER, want, 3);
    tl_model_close(m);
    free(p);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sd_checkpoint_sorted_names),
        cmocka_unit_test(test_flux_and_llm_sorted_names),
        cmocka_unit_test(test_diffusers_flux_and_controlnet_sorted_names),
        cmocka_unit_test(test_unknown_families_keep_file_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
