/*
 * test_plan_cli.c — `tierload plan` end to end (profiles and hypothetical
 * devices, --json that reads back, exit codes for infeasible plans and bad
 * specs) and the summary built from a real catalog (a GGUF of the test data,
 * its sizes summed from its expected JSON).
 */
#include "helpers/testutil.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static void test_cli_human(void **state) {
    (void)state;
    tu_run r = tu_cli_run("plan", "--profile", "ltx2", "--devices", "cuda0=16G,cuda1=10G", "--size",
                          "768x512x25", NULL);
    if (r.status != 0) fail_msg("status %d: %s", r.status, r.err);
    assert_non_null(strstr(r.out, "cuda0      gpu"));
    assert_non_null(strstr(r.out, "diffusion  params"));
    assert_non_null(strstr(r.out, "layer_split on cuda0"));
    assert_non_null(strstr(r.out, "for its phase only"));
    assert_non_null(strstr(r.out, "projected peak"));
    assert_non_null(strstr(r.out, "host RAM for weights"));
    assert_non_null(strstr(r.out, "bytes moved per run"));
    assert_non_null(strstr(r.out, "vae: tiled"));
    tu_run_free(&r);
}

static void test_cli_json(void **state) {
    (void)state;
    tu_run a = tu_cli_run("plan", "--profile", "flux-q8", "--devices", "cuda0=16G,cuda1=10G",
                          "--json", NULL);
    tu_run b = tu_cli_run("plan", "--profile", "flux-q8", "--devices", "cuda0=16G,cuda1=10G",
                          "--json", NULL);
    assert_int_equal(a.status, 0);
    assert_string_equal(a.out, b.out); /* byte-identical */
    tl_plan *p = NULL;
    if (tl_plan_from_json(a.out, strlen(a.out), &p)) fail_msg("%s", tl_last_error());
    assert_true(tl_plan_feasible(p));
    tl_plan_decision d;
    tl_plan_decision_of(p, TL_COMP_DIFFUSION, &d, sizeof d);
    assert_int_equal(d.mode, TL_PLAN_MODE_GPU);
    assert_string_equal(tl_plan_device_of(p, d.devices[0])->name, "cuda0");
    assert_non_null(strstr(a.out, "\"moved_per_run\""));
    assert_non_null(strstr(a.out, "\"peaks\""));
    tl_plan_destroy(p);
    tu_run_free(&a);
    tu_run_free(&b);
}

static void test_cli_errors(void **state) {
    (void)state;
    /* infeasible: exit 11, the reason on stderr, the plan (feasible false) on stdout */
    tu_run r = tu_cli_run("plan", "--profile", "flux-f16", "--devices", "cuda0=8G", "--backend",
                          "dit=cuda0", "--json", NULL);
    assert_int_equal(r.status, 11);
    assert_non_null(strstr(r.err, "short by"));
    assert_non_null(strstr(r.out, "\"feasible\":\tfalse"));
    /* the best effort, not an all-cpu plan: the diffusion model on cuda0 as asked */
    assert_non_null(strstr(r.out, "\"requested\":\t[\"cuda0\"]"));
    assert_non_null(strstr(r.out, "\"shortfall\":"));
    assert_non_null(strstr(r.out, "\"mode\":\t\"gpu\""));
    tu_run_free(&r);
    r = tu_cli_run("plan", "--profile", "sdxl", "--devices", "cuda0=12G", "--backend", "*=cuda0",
                   "--max-vram", "6G", NULL);
    assert_int_equal(r.status, 11);
    assert_non_null(strstr(r.err, "--max-vram 6.8G would fit"));
    tu_run_free(&r);
    /* bad specs: exit 2 (invalid) or 5 (not found), naming the item */
    r = tu_cli_run("plan", "--profile", "sdxl", "--devices", "cuda0=12G", "--backend",
                   "unet=cuda0&cpu", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "cpu cannot be part of a split"));
    tu_run_free(&r);
    r = tu_cli_run("plan", "--profile", "sdxl", "--devices", "cuda0=12G", "--backend", "vae=cuda3",
                   NULL);
    assert_int_equal(r.status, 5);
    assert_non_null(strstr(r.err, "unknown device 'cuda3'"));
    tu_run_free(&r);
    r = tu_cli_run("plan", "--profile", "sdxl", "--devices", "cuda0=12G", "--clip-on-cpu",
                   "--backend", "te=cuda0", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "given twice"));
    tu_run_free(&r);
    r = tu_cli_run("plan", "--profile", "nope", "--devices", "cuda0=12G", NULL);
    assert_int_equal(r.status, 5);
    assert_non_null(strstr(r.err, "unknown profile"));
    tu_run_free(&r);
    r = tu_cli_run("plan", NULL);
    assert_int_equal(r.status, 2);
    tu_run_free(&r);
    r = tu_cli_run("plan", "--profile", "sd15", "--devices", NULL);
    assert_int_equal(r.status, 2);
    tu_run_free(&r);
    r = tu_cli_run("plan", "--help", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "--max-vram"));
    tu_run_free(&r);
}

static void test_cli_flags(void **state) {
    (void)state;
    tu_run r = tu_cli_run("plan", "--profile", "sdxl", "--devices", "cuda0=8G", "--vae-on-cpu",
                          "--json", NULL);
    assert_int_equal(r.status, 0);
    tl_plan *p = NULL;
    assert_int_equal(tl_plan_from_json(r.out, strlen(r.out), &p), TL_OK);
    tl_plan_decision d;
    tl_plan_decision_of(p, TL_COMP_VAE, &d, sizeof d);
    assert_int_equal(d.mode, TL_PLAN_MODE_CPU);
    tl_plan_destroy(p);
    tu_run_free(&r);
    r = tu_cli_run("plan", "--profile", "flux-f16", "--devices", "cuda0=16G", "--offload-to-cpu",
                   "--json", NULL);
    assert_int_equal(r.status, 0);
    assert_int_equal(tl_plan_from_json(r.out, strlen(r.out), &p), TL_OK);
    tl_plan_decision_of(p, TL_COMP_DIFFUSION, &d, sizeof d);
    /* streamed from RAM, with a resident prefix where the 16 GiB leave room: what stays and what
     * streams add up to the component, and only the streamed part moves, once per pass (20) */
    assert_int_equal(d.mode, TL_PLAN_MODE_STREAM);
    assert_true(d.device_bytes[0] > 0);
    assert_int_equal(d.device_bytes[0] + d.host_bytes, d.bytes);
    assert_int_equal(d.moved_per_run, d.host_bytes * 20);
    tl_plan_destroy(p);
    tu_run_free(&r);
}

static void test_summary_from_model(void **state) {
    (void)state;
    /* every size below is summed from what gguf-py's reader says about the file */
    cJSON *exp = tu_expected("tiny-llama-q8_0.gguf");
    const char *path = tu_testdata("gguf/tiny-llama-q8_0.gguf"); /* after: one buffer */
    uint64_t all = tu_expected_sum(exp, NULL, 0, 0);
    uint64_t blk0 = tu_expected_sum(exp, "blk.0.", 0, 0),
             blk1 = tu_expected_sum(exp, "blk.1.", 0, 0);
    assert_true(blk0 > 0 && blk1 > 0);
    assert_int_equal(tu_expected_count(exp, "blk.2.", 0), 0); /* two blocks */
    tl_model *m = NULL;
    assert_int_equal(tl_model_open(&path, 1, NULL, &m), TL_OK);
    tl_plan_summary s;
    assert_int_equal(tl_plan_summary_from_model(m, TL_DTYPE_INVALID, &s), TL_OK);
    uint64_t total = 0;
    for (int c = 0; c < TL_COMP_COUNT; c++)
        total += s.comp[c].bytes;
    assert_int_equal(total, all);
    const tl_plan_part *o = &s.comp[tl_model_tensor(m, 0)->component];
    assert_int_equal(o->n_layers, 2); /* blk.0, blk.1 */
    assert_int_equal(o->layers[0], blk0);
    assert_int_equal(o->layers[1], blk1);
    assert_int_equal(o->other_bytes, all - blk0 - blk1); /* token_embd, output_norm, output */
    assert_int_equal(o->matrix_bytes, 0);                /* no matrix has both sides >= 256 */
    tl_plan_summary_clear(&s);
    /* as F32: every 2-D tensor at 4 bytes an element, 1-D norms unchanged */
    assert_int_equal(tl_plan_summary_from_model(m, TL_DTYPE_F32, &s), TL_OK);
    o = &s.comp[tl_model_tensor(m, 0)->component];
    uint64_t f32_all = tu_expected_sum(exp, NULL, 2, 4) + tu_expected_sum(exp, NULL, 1, 0);
    uint64_t f32_blk0 = tu_expected_sum(exp, "blk.0.", 2, 4) + tu_expected_sum(exp, "blk.0.", 1, 0);
    uint64_t f32_blk1 = tu_expected_sum(exp, "blk.1.", 2, 4) + tu_expected_sum(exp, "blk.1.", 1, 0);
    assert_int_equal(o->other_bytes, f32_all - f32_blk0 - f32_blk1);
    assert_int_equal(o->layers[0], f32_blk0);
    tl_plan_summary_clear(&s);
    tl_model_close(m);
    /* and the CLI plans from files */
    tu_run r = tu_cli_run("plan", path, "--devices", "cuda0=1G", "--json", NULL);
    if (r.status != 0) fail_msg("status %d: %s", r.status, r.err);
    char want[64];
    snprintf(want, sizeof want, "\"bytes\":\t%" PRIu64, all);
    assert_non_null(strstr(r.out, want));
    tu_run_free(&r);
    cJSON_Delete(exp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_human),          cmocka_unit_test(test_cli_json),
        cmocka_unit_test(test_cli_errors),         cmocka_unit_test(test_cli_flags),
        cmocka_unit_test(test_summary_from_model),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
