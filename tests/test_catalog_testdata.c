/*
 * test_catalog_testdata.c — the catalog of every file of the test data (the
 * safetensors reference samples, the GGUFs made with llama.cpp's tools)
 * equals what an independent reader says about it (expected/<file>.json):
 * format, version, size, data offset, alignment, and every tensor's name,
 * dtype, shape, offset and size, in order. Also checks zero-copy data
 * pointers and metadata read back from the files.
 */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static void check_one(const char *sub, const char *base) {
    char rel[512], exp_rel[512];
    snprintf(rel, sizeof rel, "%s/%s", sub, base);
    snprintf(exp_rel, sizeof exp_rel, "expected/%s.json", base);
    char *path = strdup(tu_testdata(rel));
    char *text = tu_read_file(tu_testdata(exp_rel), NULL);
    assert_non_null(text);
    cJSON *exp = cJSON_Parse(text);
    assert_non_null(exp);
    tl_model *m;
    const char *paths[] = {path};
    tl_status st = tl_model_open(paths, 1, NULL, &m);
    if (st) fail_msg("%s: %s", base, tl_last_error());
    const cJSON *ef = cJSON_GetArrayItem(cJSON_GetObjectItem(exp, "files"), 0);
    const tl_file_info *f = tl_model_file(m, 0);
    assert_int_equal(tl_model_file_count(m), 1);
    assert_string_equal(f->format == TL_FORMAT_GGUF ? "gguf" : "safetensors",
                        cJSON_GetObjectItem(ef, "format")->valuestring);
    const cJSON *v = cJSON_GetObjectItem(ef, "version");
    assert_int_equal(f->version, cJSON_IsNull(v) ? -1 : v->valueint);
    assert_int_equal(f->size, (uint64_t)cJSON_GetObjectItem(ef, "size")->valuedouble);
    assert_int_equal(f->data_offset, (uint64_t)cJSON_GetObjectItem(ef, "data_offset")->valuedouble);
    const cJSON *al = cJSON_GetObjectItem(ef, "alignment");
    assert_int_equal(f->alignment, cJSON_IsNull(al) ? 0 : (uint32_t)al->valueint);
    const cJSON *ets = cJSON_GetObjectItem(exp, "tensors");
    assert_int_equal(tl_model_tensor_count(m), (size_t)cJSON_GetArraySize(ets));
    size_t i = 0;
    const cJSON *et;
    cJSON_ArrayForEach(et, ets) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        assert_string_equal(t->name, cJSON_GetObjectItem(et, "name")->valuestring);
        assert_string_equal(tl_dtype_name(t->dtype), cJSON_GetObjectItem(et, "dtype")->valuestring);
        const cJSON *shape = cJSON_GetObjectItem(et, "shape");
        assert_int_equal(t->n_dims, (uint32_t)cJSON_GetArraySize(shape));
        for (uint32_t d = 0; d < t->n_dims; d++)
            assert_int_equal(t->shape[d], (int64_t)cJSON_GetArrayItem(shape, (int)d)->valuedouble);
        assert_int_equal(t->offset, (uint64_t)cJSON_GetObjectItem(et, "offset")->valuedouble);
        assert_int_equal(t->nbytes, (uint64_t)cJSON_GetObjectItem(et, "nbytes")->valuedouble);
        /* zero-copy: the data pointer is the mapping plus the absolute offset */
        assert_ptr_equal(tl_model_tensor_data(m, i),
                         (const char *)tl_model_file_map(m, 0) + t->offset);
        assert_true(tl_model_find(m, t->name) == i);
        i++;
    }
    assert_true(tl_model_find(m, "no.such.tensor") == TL_NOT_FOUND);
    tl_model_close(m);
    cJSON_Delete(exp);
    free(text);
    free(path);
}

/* The files of sub whose name ends in suffix: how many, each checked against its expected JSON
 * when check is set. */
static int each_file(const char *sub, const char *suffix, bool check) {
    char *dir = strdup(tu_testdata(sub));
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name), sl = strlen(suffix);
        if (len <= sl || strcmp(de->d_name + len - sl, suffix)) continue;
        if (check) check_one(sub, de->d_name);
        n++;
    }
    closedir(d);
    free(dir);
    return n;
}

static void test_every_expected_file(void **state) {
    (void)state;
    /* the committed samples first: they need nothing but the checkout */
    int n_st = each_file("safetensors", ".safetensors", true);
    assert_true(n_st > 0);
    int n_gguf = each_file("gguf", ".gguf", true);
    /* the GGUFs the tests name, and nothing without its expected JSON or the other way round */
    const char *named[] = {"tiny-llama-f16.gguf", "tiny-llama-q8_0.gguf", "tiny-llama-q4_0.gguf",
                           "tiny-llama-256-q4_k_m.gguf", "ggml-vocab-llama-spm.gguf"};
    for (size_t i = 0; i < sizeof named / sizeof *named; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "gguf/%s", named[i]);
        (void)tu_testdata(rel);
    }
    assert_true(n_gguf >= (int)(sizeof named / sizeof *named));
    assert_int_equal(each_file("expected", ".json", false), n_st + n_gguf);
}

/* The number of blk.N layers among the expected JSON's tensors. */
static uint64_t expected_blocks(const cJSON *exp) {
    uint64_t n = 0;
    char prefix[32];
    for (;; n++) {
        snprintf(prefix, sizeof prefix, "blk.%" PRIu64 ".", n);
        if (!tu_expected_count(exp, prefix, 0)) return n;
    }
}

static void test_gguf_metadata(void **state) {
    (void)state;
    cJSON *exp = tu_expected("tiny-llama-q4_0.gguf");
    const char *paths[] = {tu_testdata("gguf/tiny-llama-q4_0.gguf")}; /* after: one buffer */
    const cJSON *embd = cJSON_GetArrayItem(cJSON_GetObjectItem(exp, "tensors"), 0);
    assert_string_equal(cJSON_GetObjectItem(embd, "name")->valuestring, "token_embd.weight");
    /* the vocabulary: token_embd's outer dimension */
    uint64_t n_vocab =
        (uint64_t)cJSON_GetArrayItem(cJSON_GetObjectItem(embd, "shape"), 0)->valuedouble;
    tl_model *m;
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    size_t k = tl_model_meta_find(m, "general.architecture");
    assert_true(k != TL_NOT_FOUND);
    const tl_meta *e = tl_model_meta(m, (size_t)k);
    assert_int_equal(e->type, TL_META_STRING);
    assert_int_equal(e->v.s.len, 5);
    assert_memory_equal(e->v.s.ptr, "llama", 5);
    k = tl_model_meta_find(m, "llama.block_count");
    assert_int_equal(tl_model_meta(m, (size_t)k)->v.u, expected_blocks(exp));
    k = tl_model_meta_find(m, "tokenizer.ggml.tokens");
    e = tl_model_meta(m, (size_t)k);
    assert_int_equal(e->type, TL_META_ARRAY);
    assert_int_equal(e->elem_type, TL_META_STRING);
    assert_int_equal(e->count, n_vocab);
    /* llama.cpp's SPM vocabulary: <unk>, <s>, </s>, then the byte tokens */
    tl_meta el;
    assert_int_equal(tl_model_meta_element(m, (size_t)k, 1, &el), TL_OK);
    assert_int_equal(el.v.s.len, 3);
    assert_memory_equal(el.v.s.ptr, "<s>", 3);
    assert_int_equal(tl_model_meta_element(m, (size_t)k, n_vocab - 1, &el), TL_OK);
    assert_int_not_equal(tl_model_meta_element(m, (size_t)k, n_vocab, &el), TL_OK);
    k = tl_model_meta_find(m, "tokenizer.ggml.token_type");
    assert_int_equal(tl_model_meta_element(m, (size_t)k, 0, &el), TL_OK);
    assert_int_equal(el.type, TL_META_I32);
    assert_int_equal(el.v.i, 2);
    k = tl_model_meta_find(m, "tokenizer.ggml.add_bos_token");
    assert_int_equal(tl_model_meta(m, (size_t)k)->type, TL_META_BOOL);
    assert_true(tl_model_meta(m, (size_t)k)->v.b);
    /* layers and components from names */
    const tl_tensor_info *t = tl_model_tensor(m, (size_t)tl_model_find(m, "blk.1.attn_q.weight"));
    assert_int_equal(t->layer, 1);
    assert_int_equal(t->layer_key_len, strlen("blk.1"));
    t = tl_model_tensor(m, (size_t)tl_model_find(m, "token_embd.weight"));
    assert_int_equal(t->layer, -1);
    tl_model_close(m);
    cJSON_Delete(exp);
}

static void test_safetensors_metadata_and_values(void **state) {
    (void)state;
    const char *paths[] = {tu_testdata("safetensors/overall.safetensors")};
    tl_model *m;
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    size_t k = tl_model_meta_find(m, "test");
    assert_true(k != TL_NOT_FOUND);
    assert_int_equal(tl_model_meta(m, (size_t)k)->type, TL_META_STRING);
    assert_memory_equal(tl_model_meta(m, (size_t)k)->v.s.ptr, "a", 1);
    /* the reference sample stores -3..2 in every dtype (wrapped for unsigned ones) */
    float f[6]; /* the sample's data starts unaligned: copy before reading floats */
    memcpy(f, tl_model_tensor_data(m, (size_t)tl_model_find(m, "f")), sizeof f);
    for (int i = 0; i < 6; i++)
        assert_true(f[i] == (float)(i - 3));
    const uint8_t *b = tl_model_tensor_data(m, (size_t)tl_model_find(m, "B"));
    for (int i = 0; i < 6; i++)
        assert_int_equal(b[i], (uint8_t)(i - 3));
    tl_model_close(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_expected_file),
        cmocka_unit_test(test_gguf_metadata),
        cmocka_unit_test(test_safetensors_metadata_and_values),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
