/*
 * test_names.c — component and layer rules: what a tensor's name says about
 * its pipeline component and block index, for the naming schemes of
 * stable-diffusion.cpp checkpoints, diffusers folders, standalone Flux/SD3/LTX
 * files, text encoders and llama.cpp GGUFs; and the component aliases the
 * planner accepts.
 */
#include "testutil.h"

#include <string.h>

typedef struct name_case {
    const char *name;
    tl_component comp;
    int32_t layer;
    const char *key; /* block key, NULL when no layer */
} name_case;

static const name_case cases[] = {
    {"model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_k.weight",
     TL_COMP_DIFFUSION, 4, "model.diffusion_model.input_blocks.4"},
    {"model.diffusion_model.output_blocks.4.0.in_layers.2.weight", TL_COMP_DIFFUSION, 4,
     "model.diffusion_model.output_blocks.4"},
    {"model.diffusion_model.middle_block.1.proj_in.weight", TL_COMP_DIFFUSION, 1,
     "model.diffusion_model.middle_block.1"},
    {"model.diffusion_model.time_embed.0.weight", TL_COMP_DIFFUSION, -1, NULL},
    {"first_stage_model.decoder.up.1.block.2.conv1.weight", TL_COMP_VAE, 2,
     "first_stage_model.decoder.up.1.block.2"},
    {"first_stage_model.quant_conv.weight", TL_COMP_VAE, -1, NULL},
    {"cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc1.weight", TL_COMP_COND, 11,
     "cond_stage_model.transformer.text_model.encoder.layers.11"},
    {"conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight", TL_COMP_COND, 31,
     "conditioner.embedders.1.model.transformer.resblocks.31"},
    {"text_encoders.t5xxl.transformer.encoder.block.23.layer.1.DenseReluDense.wo.weight",
     TL_COMP_COND, 23, "text_encoders.t5xxl.transformer.encoder.block.23"},
    {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight", TL_COMP_DIFFUSION, 1,
     "unet.down_blocks.1"},
    {"transformer.transformer_blocks.27.ff.net.0.proj.weight", TL_COMP_DIFFUSION, 27,
     "transformer.transformer_blocks.27"},
    {"vae.decoder.mid_block.resnets.0.conv1.weight", TL_COMP_VAE, -1, NULL},
    {"text_encoder_2.text_model.encoder.layers.3.self_attn.q_proj.weight", TL_COMP_COND, 3,
     "text_encoder_2.text_model.encoder.layers.3"},
    {"controlnet.controlnet_down_blocks.0.weight", TL_COMP_CONTROLNET, 0,
     "controlnet.controlnet_down_blocks.0"},
    {"control_model.input_blocks.1.0.emb_layers.1.weight", TL_COMP_CONTROLNET, 1,
     "control_model.input_blocks.1"},
    {"double_blocks.12.img_attn.qkv.weight", TL_COMP_DIFFUSION, 12, "double_blocks.12"},
    {"single_blocks.37.linear1.weight", TL_COMP_DIFFUSION, 37, "single_blocks.37"},
    {"img_in.weight", TL_COMP_DIFFUSION, -1, NULL},
    {"decoder.up.3.block.0.conv1.weight", TL_COMP_VAE, 0, "decoder.up.3.block.0"},
    {"encoder.block.5.layer.0.SelfAttention.q.weight", TL_COMP_COND, 5, "encoder.block.5"},
    {"text_model.encoder.layers.7.mlp.fc2.bias", TL_COMP_COND, 7, "text_model.encoder.layers.7"},
    {"blk.3.attn_q.weight", TL_COMP_OTHER, 3, "blk.3"},
    {"model.layers.30.self_attn.k_proj.weight", TL_COMP_OTHER, 30, "model.layers.30"},
    {"transformer.h.5.attn.c_attn.weight", TL_COMP_DIFFUSION, 5, "transformer.h.5"},
    {"token_embd.weight", TL_COMP_OTHER, -1, NULL},
    {"output.weight", TL_COMP_OTHER, -1, NULL},
    {"blocks.x.weight", TL_COMP_OTHER, -1, NULL},
    {"blocks.1234567890.weight", TL_COMP_OTHER, -1, NULL}, /* too long to be an index */
    {"", TL_COMP_OTHER, -1, NULL},
    {"blocks.", TL_COMP_OTHER, -1, NULL},
    {".blocks.2", TL_COMP_OTHER, 2, ".blocks.2"},
};

static void test_name_rules(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const name_case *c = &cases[i];
        size_t klen = 99;
        int32_t layer = tl_layer_of(c->name, &klen);
        if (tl_component_of(c->name) != c->comp || layer != c->layer)
            fail_msg("%s: got %s/%d, want %s/%d", c->name,
                     tl_component_name(tl_component_of(c->name)), layer, tl_component_name(c->comp),
                     c->layer);
        if (c->key) {
            assert_int_equal(klen, strlen(c->key));
            assert_memory_equal(c->name, c->key, klen);
        } else {
            assert_int_equal(klen, 0);
        }
    }
    assert_int_equal(tl_layer_of("blk.9.x", NULL), 9);
}

static void test_component_aliases(void **state) {
    (void)state;
    const char *diff[] = {"diffusion", "model", "unet", "DiT", "transformer"};
    /* stable-diffusion.cpp's module table (docs/backend.md), matched case-insensitively with
       '-' and '_' ignored */
    const char *cond[] = {"cond", "clip", "te", "text", "conditioner", "llm", "t5xxl", "t5",
                          "textencoder", "textencoders", "Text_Encoder", "TE", "t-5-xxl"};
    const char *vae[] = {"vae", "firststage", "autoencoder", "tae", "first_stage"};
    const char *cn[] = {"controlnet", "control_net", "control-net", "control", "ControlNet"};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(tl_component_from_name(diff[i]), TL_COMP_DIFFUSION);
    for (size_t i = 0; i < sizeof cond / sizeof cond[0]; i++)
        if (tl_component_from_name(cond[i]) != TL_COMP_COND) fail_msg("'%s' is not cond", cond[i]);
    for (size_t i = 0; i < sizeof vae / sizeof vae[0]; i++)
        assert_int_equal(tl_component_from_name(vae[i]), TL_COMP_VAE);
    for (size_t i = 0; i < sizeof cn / sizeof cn[0]; i++)
        assert_int_equal(tl_component_from_name(cn[i]), TL_COMP_CONTROLNET);
    assert_int_equal(tl_component_from_name("nope"), TL_COMP_INVALID);
    /* its modules tierload has no component for are not aliases of one */
    assert_int_equal(tl_component_from_name("clip_vision"), TL_COMP_INVALID);
    assert_int_equal(tl_component_from_name("upscaler"), TL_COMP_INVALID);
    assert_int_equal(tl_component_from_name(""), TL_COMP_INVALID);
    assert_int_equal(tl_component_from_name("-_"), TL_COMP_INVALID);
    assert_int_equal(tl_component_from_name(NULL), TL_COMP_INVALID);
    assert_string_equal(tl_component_name(TL_COMP_VAE), "vae");
}

static void test_dtype_table(void **state) {
    (void)state;
    /* exact sizes for a few of every family */
    uint64_t n;
    assert_true(tl_dtype_nbytes(TL_DTYPE_Q4_K, 512, &n));
    assert_int_equal(n, 288);
    assert_true(tl_dtype_nbytes(TL_DTYPE_TQ1_0, 256, &n));
    assert_int_equal(n, 54);
    assert_true(tl_dtype_nbytes(TL_DTYPE_MXFP4, 64, &n));
    assert_int_equal(n, 34);
    assert_true(tl_dtype_nbytes(TL_DTYPE_IQ4_NL, 32, &n));
    assert_int_equal(n, 18);
    assert_true(tl_dtype_nbytes(TL_DTYPE_F4, 6, &n));
    assert_int_equal(n, 3);
    assert_false(tl_dtype_nbytes(TL_DTYPE_F4, 3, &n)); /* 12 bits: not whole bytes */
    assert_true(tl_dtype_nbytes(TL_DTYPE_F6_E2M3, 4, &n));
    assert_int_equal(n, 3);
    assert_false(tl_dtype_nbytes(TL_DTYPE_Q8_0, 33, &n));            /* not whole blocks */
    assert_false(tl_dtype_nbytes(TL_DTYPE_F64, UINT64_MAX / 4, &n)); /* overflow */
    assert_false(tl_dtype_nbytes((tl_dtype)4, 32, &n));              /* removed Q4_2 */
    assert_int_equal(tl_dtype_from_name("iq2_xxs"), TL_DTYPE_IQ2_XXS);
    assert_int_equal(tl_dtype_from_name("F8_E4M3"), TL_DTYPE_F8_E4M3);
    assert_int_equal(tl_dtype_from_name("Q4_2"), TL_DTYPE_INVALID);
    assert_null(tl_dtype_name((tl_dtype)31));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_rules),
        cmocka_unit_test(test_component_aliases),
        cmocka_unit_test(test_dtype_table),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
