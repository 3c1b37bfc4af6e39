/*
 * test_demo.c — `tierload demo` on its small variant in a private cache
 * folder: the first run generates the model and its LoRA there, runs them
 * through a sim GPU too small for the model (the UNet streams: evictions;
 * the LoRA merges with nothing unmatched; zero hash mismatches over more
 * than zero tensors checked; one phase
 * entry per pass of cond,diffusion*8,vae) and writes both pictures; the
 * second run reuses the files (same bytes, same mtime) and flags pass
 * through to run (a later --pipeline wins).
 */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void test_demo_generates_once_and_runs(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    tu_run r = tu_cli_run("demo", "--small", "--cache-dir", dir, "--json", NULL);
    if (r.status) fail_msg("demo: exit %d: %s", r.status, r.err);
    assert_non_null(strstr(r.err, "generating"));
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "phases")), 10);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "totals");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(t, "hash_mismatches")->valuedouble, 0);
    assert_true(cJSON_GetObjectItemCaseSensitive(t, "tensors_checked")->valuedouble > 0);
    assert_true(cJSON_GetObjectItemCaseSensitive(t, "evictions")->valuedouble > 0);
    cJSON_Delete(j);
    tu_run_free(&r);

    char *model = tu_path(dir, "sd-demo-small.safetensors");
    char *plan = tu_path(dir, "sd-demo-small-plan.svg");
    char *tl = tu_path(dir, "sd-demo-small-timeline.svg");
    struct stat s0, s1, sp;
    assert_int_equal(stat(model, &s0), 0);
    assert_int_equal(stat(plan, &sp), 0);
    assert_int_equal(stat(tl, &sp), 0);
    /* the model has stable-diffusion.cpp's names and all three components */
    r = tu_cli_run("info", model, "--json", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"));
    assert_non_null(strstr(r.out, "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"));
    assert_non_null(strstr(r.out, "first_stage_model.decoder.conv_in.weight"));
    tu_run_free(&r);

    /* second run: reused; flags pass through (a later --pipeline wins); human output */
    r = tu_cli_run("demo", "--small", "--cache-dir", dir, "--pipeline", "cond,vae", NULL);
    if (r.status) fail_msg("demo again: exit %d: %s", r.status, r.err);
    assert_non_null(strstr(r.out, "reusing"));
    assert_null(strstr(r.out, "generating"));
    assert_non_null(strstr(r.out, "modules merged, 0 unmatched"));
    unsigned long long checked = 0, mism = 1;
    assert_true(tu_run_checked(r.out, &checked, &mism));
    assert_true(checked > 0);
    assert_int_equal(mism, 0);
    assert_non_null(strstr(r.out, "vae #1"));
    assert_null(strstr(r.out, "diffusion #1"));
    assert_non_null(strstr(r.out, "pictures:"));
    tu_run_free(&r);
    assert_int_equal(stat(model, &s1), 0);
    assert_int_equal(s0.st_mtim.tv_sec, s1.st_mtim.tv_sec);
    assert_int_equal(s0.st_mtim.tv_nsec, s1.st_mtim.tv_nsec);
    free(model), free(plan), free(tl);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_generates_once_and_runs),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
