/*
 * test_discover.c — sharded checkpoints and folders: a shard index opens as
 * one catalog; shard paths that leave the index's folder are refused; every
 * missing shard is reported; promises the index makes are checked; diffusers
 * folders become one catalog with component prefixes; plain folders and
 * directories-as-files behave. Shards are copies of the reference writer's
 * sample files.
 */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void copy_sample(const char *sample, const char *dst) {
    char rel[256];
    snprintf(rel, sizeof rel, "safetensors/%s", sample);
    tu_copy_testdata(rel, dst);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char *p = tu_path(dir, name);
    tu_write_file(p, text, strlen(text));
    free(p);
}

static tl_status open_one(const char *path, tl_model **m) {
    const char *paths[] = {path};
    return tl_model_open(paths, 1, NULL, m);
}

static void test_sharded_index(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *s1 = tu_path(dir, "model-00001-of-00002.safetensors");
    char *s2 = tu_path(dir, "model-00002-of-00002.safetensors");
    copy_sample("f.safetensors", s2);
    copy_sample("B.safetensors", s1);
    write_text(
        dir, "x.safetensors.index.json",
        "{\"metadata\":{\"total_size\":30},\"weight_map\":{"
        "\"f\":\"model-00002-of-00002.safetensors\",\"B\":\"model-00001-of-00002.safetensors\"}}");
    char *idx = tu_path(dir, "x.safetensors.index.json");
    tl_model *m;
    assert_int_equal(open_one(idx, &m), TL_OK);
    assert_int_equal(tl_model_file_count(m), 2);
    /* shards in name order */
    assert_non_null(strstr(tl_model_file(m, 0)->path, "00001"));
    assert_int_equal(tl_model_tensor_count(m), 2);
    assert_int_equal(tl_model_tensor(m, (size_t)tl_model_find(m, "f"))->file, 1);
    tl_model_close(m);
    /* the folder itself opens through its one index */
    assert_int_equal(open_one(dir, &m), TL_OK);
    assert_int_equal(tl_model_tensor_count(m), 2);
    tl_model_close(m);
    /* a promise the shard does not keep */
    write_text(dir, "bad.safetensors.index.json",
               "{\"weight_map\":{\"g\":\"model-00002-of-00002.safetensors\"}}");
    char *bad = tu_path(dir, "bad.safetensors.index.json");
    assert_int_equal(open_one(bad, &m), TL_ERR_FORMAT);
    assert_non_null(strstr(tl_last_error(), "'g'"));
    /* a promise naming the wrong shard */
    write_text(dir, "bad.safetensors.index.json",
               "{\"weight_map\":{\"f\":\"model-00001-of-00002.safetensors\"}}");
    assert_int_equal(open_one(bad, &m), TL_ERR_FORMAT);
    assert_non_null(strstr(tl_last_error(), "'f'"));
    /* the folder now has two indexes: ambiguous */
    assert_int_equal(open_one(dir, &m), TL_ERR_INVALID_ARG);
    free(bad);
    free(idx);
    free(s1);
    free(s2);
    tu_tmpdir_rm(dir);
}

static void test_index_refuses_escape_and_reports_missing(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *idx = tu_path(dir, "m.safetensors.index.json");
    const char *escapes[] = {"../outside.safetensors",
                             "/etc/passwd",
                             "a/../../x.safetensors",
                             "sub\\\\..\\\\x",
                             "",
                             "a//b"};
    for (size_t i = 0; i < sizeof escapes / sizeof escapes[0]; i++) {
        char json[256];
        snprintf(json, sizeof json, "{\"weight_map\":{\"t\":\"%s\"}}", escapes[i]);
        tu_write_file(idx, json, strlen(json));
        tl_model *m;
        assert_int_equal(open_one(idx, &m), TL_ERR_FORMAT);
        assert_non_null(strstr(tl_last_error(), "leaves the index's folder"));
        assert_non_null(strstr(tl_last_error(), "m.safetensors.index.json"));
    }
    write_text(dir, "m.safetensors.index.json",
               "{\"weight_map\":{\"a\":\"s-1.safetensors\",\"b\":\"s-2.safetensors\",\"c\":\"s-1."
               "safetensors\"}}");
    tl_model *m;
    assert_int_equal(open_one(idx, &m), TL_ERR_NOT_FOUND);
    assert_non_null(strstr(tl_last_error(), "2 shards missing: s-1.safetensors, s-2.safetensors"));
    const char *bad_json[] = {"{", "[]", "{\"weight_map\":[]}", "{\"weight_map\":{}}",
                              "{\"weight_map\":{\"a\":1}}"};
    for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++) {
        tu_write_file(idx, bad_json[i], strlen(bad_json[i]));
        assert_int_equal(open_one(idx, &m), TL_ERR_FORMAT);
    }
    free(idx);
    tu_tmpdir_rm(dir);
}

static void test_diffusers_folder(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    const char *subs[] = {"unet",           "vae",       "text_encoder",
                          "text_encoder_2", "tokenizer", "scheduler"};
    for (size_t i = 0; i < 6; i++) {
        char *p = tu_path(dir, subs[i]);
        assert_int_equal(mkdir(p, 0700), 0);
        free(p);
    }
    char *p;
    copy_sample("f.safetensors", p = tu_path(dir, "unet/diffusion_pytorch_model.safetensors"));
    free(p);
    /* without the plain name, one variant is taken (the first by name), not all of them */
    copy_sample("e.safetensors", p = tu_path(dir, "vae/diffusion_pytorch_model.bf16.safetensors"));
    free(p);
    copy_sample("e.safetensors", p = tu_path(dir, "vae/diffusion_pytorch_model.fp16.safetensors"));
    free(p);
    copy_sample("H.safetensors", p = tu_path(dir, "text_encoder/model.safetensors"));
    free(p);
    /* a sharded component */
    copy_sample("I.safetensors",
                p = tu_path(dir, "text_encoder_2/model-00001-of-00001.safetensors"));
    free(p);
    write_text(dir, "text_encoder_2/model.safetensors.index.json",
               "{\"weight_map\":{\"I\":\"model-00001-of-00001.safetensors\"}}");
    write_text(dir, "tokenizer/vocab.json", "{}");
    write_text(dir, "model_index.json",
               "{\"_class_name\":\"StableDiffusionXLPipeline\",\"_diffusers_version\":\"0.30.0\","
               "\"unet\":[\"diffusers\",\"UNet2DConditionModel\"],\"vae\":[\"diffusers\","
               "\"AutoencoderKL\"],"
               "\"text_encoder\":[\"transformers\",\"CLIPTextModel\"],"
               "\"text_encoder_2\":[\"transformers\",\"CLIPTextModelWithProjection\"],"
               "\"tokenizer\":[\"transformers\",\"CLIPTokenizer\"],\"scheduler\":[\"diffusers\","
               "\"EulerDiscreteScheduler\"],"
               "\"image_encoder\":[null,null]}");
    tl_model *m;
    assert_int_equal(open_one(dir, &m), TL_OK);
    assert_int_equal(tl_model_file_count(m), 4);
    assert_int_equal(tl_model_tensor_count(m), 4);
    const struct {
        const char *name;
        tl_component comp;
    } want[] = {{"unet.f", TL_COMP_DIFFUSION},
                {"vae.e", TL_COMP_VAE},
                {"text_encoder.H", TL_COMP_COND},
                {"text_encoder_2.I", TL_COMP_COND}};
    for (size_t i = 0; i < 4; i++) {
        size_t k = tl_model_find(m, want[i].name);
        if (k == TL_NOT_FOUND) fail_msg("missing %s", want[i].name);
        assert_int_equal(tl_model_tensor(m, (size_t)k)->component, want[i].comp);
    }
    tl_model_close(m);
    /* a component name that tries to leave the folder */
    write_text(dir, "model_index.json", "{\"..\":[\"diffusers\",\"X\"]}");
    assert_int_equal(open_one(dir, &m), TL_ERR_FORMAT);
    write_text(dir, "model_index.json", "{\"tokenizer\":[\"transformers\",\"CLIPTokenizer\"]}");
    assert_int_equal(open_one(dir, &m), TL_ERR_NOT_FOUND);
    tu_tmpdir_rm(dir);
}

static void test_plain_folder_and_prefixes(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    tl_model *m;
    assert_int_equal(open_one(dir, &m), TL_ERR_NOT_FOUND);
    assert_non_null(strstr(tl_last_error(), "no .gguf or .safetensors"));
    char *a = tu_path(dir, "a.safetensors"), *b = tu_path(dir, "b.safetensors");
    copy_sample("B.safetensors", a);
    copy_sample("b.safetensors", b);
    assert_int_equal(open_one(dir, &m), TL_OK);
    assert_int_equal(tl_model_tensor_count(m), 2);
    tl_model_close(m);
    /* two files holding the same tensor: names collide, and the error names the tensor and
       both files */
    char *c = tu_path(dir, "c.safetensors");
    copy_sample("B.safetensors", c);
    const char *two[] = {a, c};
    assert_int_equal(tl_model_open(two, 2, NULL, &m), TL_ERR_FORMAT);
    const char *e = tl_last_error();
    if (!strstr(e, "'B'") || !strstr(e, a) || !strstr(e, c))
        fail_msg("the collision message does not name the tensor and both files: %s", e);
    /* the same file twice (st_dev/st_ino, whatever the spelling) is refused as such */
    const char *same[] = {a, a};
    assert_int_equal(tl_model_open(same, 2, NULL, &m), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "are the same file, named twice"));
    /* ... unless prefixes tell them apart, as sd.cpp's --vae / --clip_l do */
    const char *prefixes[] = {"first_stage_model.", "cond_stage_model."};
    tl_model_options o = {.size = sizeof(tl_model_options), .prefixes = prefixes};
    assert_int_equal(tl_model_open(two, 2, &o, &m), TL_OK);
    assert_int_equal(tl_model_tensor(m, 0)->component, TL_COMP_VAE);
    assert_int_equal(tl_model_tensor(m, 1)->component, TL_COMP_COND);
    assert_string_equal(tl_model_tensor(m, 1)->name, "cond_stage_model.B");
    tl_model_close(m);
    free(a);
    free(b);
    free(c);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sharded_index),
        cmocka_unit_test(test_index_refuses_escape_and_reports_missing),
        cmocka_unit_test(test_diffusers_folder),
        cmocka_unit_test(test_plain_folder_and_prefixes),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
