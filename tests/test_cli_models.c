/*
 * test_cli_models.c — the CLI's component-file flags (stable-diffusion.cpp
 * style): `--vae F --clip_l F --diffusion-model F` give each file's tensors
 * the prefix of their component, in info, plan and load alike (the plan's
 * component bytes and the load's byte counts equal the files' tensor bytes,
 * computed here from the files themselves); a flag without its file is a
 * usage error.
 */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* Tensor bytes of a safetensors file, from its own bytes: size - 8 - header length. */
static double st_data_bytes(const char *path) {
    size_t len;
    unsigned char *b = (unsigned char *)tu_read_file(path, &len);
    assert_non_null(b);
    assert_true(len >= 8);
    uint64_t h = 0;
    for (int i = 0; i < 8; i++)
        h |= (uint64_t)b[i] << (8 * i);
    free(b);
    return (double)(len - 8 - h);
}

static const cJSON *item(const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!it) fail_msg("no \"%s\" in the JSON", key);
    return it;
}

static const cJSON *component(const cJSON *plan, const char *name) {
    const cJSON *c;
    cJSON_ArrayForEach(c, item(plan, "components")) {
        if (!strcmp(item(c, "name")->valuestring, name)) return c;
    }
    fail_msg("the plan has no component %s", name);
    return NULL;
}

static void test_component_flags(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *a = tu_path(dir, "a.safetensors"), *b = tu_path(dir, "b.safetensors");
    tu_copy_testdata("safetensors/f.safetensors", a);
    tu_copy_testdata("safetensors/e.safetensors", b);
    const char *gguf = tu_testdata("gguf/tiny-llama-q4_0.gguf");
    char *g = strdup(gguf);
    tu_run r =
        tu_cli_run("info", "--json", "--vae", a, "--clip_l", b, "--diffusion-model", g, NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "\"name\":\"first_stage_model.f\""));
    assert_non_null(strstr(r.out, "\"name\":\"text_encoders.clip_l.e\""));
    assert_non_null(strstr(r.out, "\"name\":\"model.diffusion_model.blk.0.attn_q.weight\""));
    assert_non_null(strstr(r.out, "\"component\":\"vae\""));
    assert_non_null(strstr(r.out, "\"component\":\"cond\""));
    assert_non_null(strstr(r.out, "\"component\":\"diffusion\",\"layer\":0"));
    tu_run_free(&r);
    /* the same two files without flags collide on nothing but land in "other" */
    r = tu_cli_run("info", "--json", a, b, NULL);
    assert_int_equal(r.status, 0);
    assert_null(strstr(r.out, "\"component\":\"vae\""));
    tu_run_free(&r);
    /* the plan places a's bytes as the VAE and b's as the conditioner (t5xxl) */
    r = tu_cli_run("plan", "--json", "--vae", a, "--t5xxl", b, "--devices", "cuda0=4G", NULL);
    assert_int_equal(r.status, 0);
    cJSON *plan = cJSON_Parse(r.out);
    assert_non_null(plan);
    assert_true(cJSON_IsTrue(item(plan, "feasible")));
    assert_int_equal(cJSON_GetArraySize(item(plan, "components")), 2);
    const cJSON *vae = component(plan, "vae"), *cond = component(plan, "cond");
    assert_true(item(vae, "bytes")->valuedouble == st_data_bytes(a));
    assert_true(item(cond, "bytes")->valuedouble == st_data_bytes(b));
    assert_true(cJSON_GetArrayItem(item(vae, "device_bytes"), 0)->valuedouble == st_data_bytes(a));
    assert_string_equal(cJSON_GetArrayItem(item(vae, "devices"), 0)->valuestring, "cuda0");
    cJSON_Delete(plan);
    tu_run_free(&r);
    /* the load reads every tensor byte of both files */
    r = tu_cli_run("load", "--quiet", "--json", "--llm", b, "--vae", a, NULL);
    assert_int_equal(r.status, 0);
    cJSON *load = cJSON_Parse(r.out);
    assert_non_null(load);
    assert_true(item(load, "bytes")->valuedouble == st_data_bytes(a) + st_data_bytes(b));
    assert_true(item(load, "bytes_out")->valuedouble == st_data_bytes(a) + st_data_bytes(b));
    const cJSON *files = item(load, "files");
    assert_int_equal(cJSON_GetArraySize(files), 2);
    const cJSON *f;
    double sum = 0;
    cJSON_ArrayForEach(f, files) {
        const char *path = item(f, "path")->valuestring;
        assert_true(!strcmp(path, a) || !strcmp(path, b));
        assert_true(item(f, "bytes")->valuedouble == st_data_bytes(path));
        sum += item(f, "bytes")->valuedouble;
    }
    assert_true(sum == st_data_bytes(a) + st_data_bytes(b));
    cJSON_Delete(load);
    tu_run_free(&r);
    r = tu_cli_run("info", "--vae", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "--vae needs a file"));
    tu_run_free(&r);
    free(g);
    free(a);
    free(b);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_component_flags)};
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
