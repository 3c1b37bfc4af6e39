/*
 * test_cli_models.c — the CLI's component-file flags (stable-diffusion.cpp
 * style): `--vae F --clip_l F --diffusion-model F` give each file's tensors
 * the prefix of their component, in info, plan and load alike; a flag without
 * its file is a usage error.
 */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

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
    r = tu_cli_run("plan", "--json", "--vae", a, "--t5xxl", b, "--devices", "cuda0=4G", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "\"vae\""));
    tu_run_free(&r);
    r = tu_cli_run("load", "--quiet", "--json", "--llm", b, NULL);
    assert_int_equal(r.status, 0);
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
