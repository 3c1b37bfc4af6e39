/*
 * test_run_cli.c — `tierload run` as a user runs it, on an SD-like model
 * from `tierload mkmodel`, with a simulated GPU sized so that everything
 * fits, it barely fits, or the diffusion model must stream: one phase entry
 * per pass, zero hash mismatches with every acquired tensor checked (the
 * count from the catalog `info` prints), bytes onto the device within 5% of
 * the offline optimum, both equal to the model's bytes when everything fits
 * (each byte loaded once: no optimum can be lower), nothing moved after the
 * first pass when everything fits,
 * a run from a saved plan equal to a planned one, and clear errors for a
 * device too small, an unknown pipeline component and a plan naming a
 * device that does not exist.
 */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static uint64_t num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v)) fail_msg("key %s missing", k);
    return (uint64_t)v->valuedouble;
}

static char *model(char **dir) {
    *dir = tu_tmpdir();
    char *p = tu_path(*dir, "m.safetensors");
    tu_run r =
        tu_cli_run("mkmodel", p, "--size", "48M", "--tensors", "240", "--profile", "sdxl", NULL);
    assert_int_equal(r.status, 0);
    tu_run_free(&r);
    return p;
}

static cJSON *run_json(const char *path, const char *sim, const char *extra) {
    tu_run r = tu_cli_run("run", path, "--sim", sim, "--reserve", "diffusion=0,cond=0,vae=0",
                          "--pipeline", "cond,diffusion*3,vae", "--json", extra, NULL);
    if (r.status != 0) fail_msg("run %s: exit %d: %s", sim, r.status, r.err);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    tu_run_free(&r);
    return j;
}

/* Tensors per component, from `tierload info --json` (the catalog as the CLI prints it). */
typedef struct census {
    uint64_t tensors[4], bytes; /* diffusion, cond, vae, other; all bytes */
} census;

static census count_tensors(const char *path) {
    tu_run r = tu_cli_run("info", path, "--json", NULL);
    assert_int_equal(r.status, 0);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    census c = {{0}, 0};
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(j, "tensors")) {
        const char *comp = cJSON_GetObjectItemCaseSensitive(t, "component")->valuestring;
        int k = !strcmp(comp, "diffusion") ? 0 : !strcmp(comp, "cond") ? 1 : !strcmp(comp, "vae") ? 2 : 3;
        c.tensors[k]++;
        c.bytes += num(t, "nbytes");
    }
    cJSON_Delete(j);
    tu_run_free(&r);
    return c;
}

/*
 * verified: every tensor a phase acquires is checked (cond, diffusion x3, vae;
 * tensors of no component in every phase). fits: everything stays on the
 * device, so the optimum and the bytes moved are the model's bytes, once.
 */
static void check_run(cJSON *j, const census *c, bool fits, bool verified) {
    const cJSON *ph = cJSON_GetObjectItemCaseSensitive(j, "phases");
    assert_int_equal(cJSON_GetArraySize(ph), 5); /* cond, diffusion x3, vae */
    const char *names[] = {"cond", "diffusion", "diffusion", "diffusion", "vae"};
    uint64_t sum = 0;
    for (int i = 0; i < 5; i++) {
        const cJSON *p = cJSON_GetArrayItem(ph, i);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(p, "name")->valuestring, names[i]);
        assert_int_equal(num(p, "hash_mismatches"), 0);
        sum += num(p, "bytes_moved");
        if (fits && (i == 2 || i == 3)) assert_int_equal(num(p, "bytes_moved"), 0);
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "totals");
    assert_int_equal(num(t, "hash_mismatches"), 0);
    uint64_t want_checked =
        verified ? c->tensors[1] + 3 * c->tensors[0] + c->tensors[2] + 5 * c->tensors[3] : 0;
    if (num(t, "tensors_checked") != want_checked)
        fail_msg("%llu tensors checked, want %llu", (unsigned long long)num(t, "tensors_checked"),
                 (unsigned long long)want_checked);
    assert_int_equal(num(t, "bytes_moved"), sum);
    uint64_t opt = num(t, "optimal_bytes_moved"), moved = num(t, "bytes_to_devices");
    assert_true(opt > 0);
    assert_true(moved >= opt); /* nothing beats the optimum */
    if (fits) { /* each byte of the model onto the device once: the optimum can be no lower */
        assert_int_equal(opt, c->bytes);
        assert_int_equal(moved, c->bytes);
    }
    if ((double)moved > 1.05 * (double)opt)
        fail_msg("moved %llu, optimum %llu", (unsigned long long)moved, (unsigned long long)opt);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(j, "memory"));
}

static void test_regimes(void **state) {
    (void)state;
    char *dir;
    char *p = model(&dir);
    census c = count_tensors(p);
    assert_true(c.tensors[0] > 0 && c.tensors[1] > 0 && c.tensors[2] > 0);
    /* 48 MiB of weights: fits in 80M; barely (diffusion streams a little) in 40M; 12M streams */
    cJSON *j = run_json(p, "big=80M", "--no-verify");
    check_run(j, &c, true, false);
    cJSON_Delete(j);
    j = run_json(p, "mid=40M", "--stream-all");
    check_run(j, &c, false, true);
    cJSON_Delete(j);
    j = run_json(p, "small=12M", "--no-prefetch");
    check_run(j, &c, false, true);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "totals");
    assert_true(num(t, "evictions") > 0);
    assert_true(num(t, "drops") > 0);
    assert_int_equal(num(t, "spills"), 0); /* clean weights are dropped, never written */
    cJSON_Delete(j);
    free(p);
    tu_tmpdir_rm(dir);
}

static void test_saved_plan(void **state) {
    (void)state;
    char *dir;
    char *p = model(&dir);
    tu_run r = tu_cli_run("plan", p, "--sim", "sv=20M", "--reserve", "diffusion=0,cond=0,vae=0",
                          "--json", NULL);
    assert_int_equal(r.status, 0);
    char *plan = tu_path(dir, "plan.json");
    tu_write_file(plan, r.out, strlen(r.out));
    tu_run_free(&r);
    r = tu_cli_run("run", p, "--plan", plan, "--sim", "sv=20M", "--pipeline", "cond,diffusion,vae",
                   "--json", NULL);
    if (r.status) fail_msg("run --plan: %s", r.err);
    cJSON *j = cJSON_Parse(r.out);
    assert_int_equal(num(cJSON_GetObjectItemCaseSensitive(j, "totals"), "hash_mismatches"), 0);
    assert_true(num(cJSON_GetObjectItemCaseSensitive(j, "totals"), "tensors_checked") > 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "phases")), 3);
    cJSON_Delete(j);
    tu_run_free(&r);
    /* the same plan without its device: an error naming it */
    r = tu_cli_run("run", p, "--plan", plan, NULL);
    assert_true(r.status >= 1 && r.status <= 125);
    assert_non_null(strstr(r.err, "sv"));
    tu_run_free(&r);
    free(plan);
    free(p);
    tu_tmpdir_rm(dir);
}

static void test_errors(void **state) {
    (void)state;
    char *dir;
    char *p = model(&dir);
    tu_run r = tu_cli_run("run", p, "--sim", "tiny=1M", "--backend", "diffusion=tiny", "--reserve",
                          "diffusion=0,cond=0,vae=0", "--pipeline", "diffusion", NULL);
    assert_true(r.status >= 1 && r.status <= 125);
    assert_non_null(strstr(r.err, "diffusion"));
    assert_non_null(strstr(r.err, "tiny"));
    assert_non_null(strstr(r.err, "MiB"));
    tu_run_free(&r);
    r = tu_cli_run("run", p, "--pipeline", "cond,bogus", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "bogus"));
    tu_run_free(&r);
    r = tu_cli_run("run", p, "--pipeline", "diffusion*0", NULL);
    assert_int_equal(r.status, 2);
    tu_run_free(&r);
    free(p);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_regimes),
        cmocka_unit_test(test_saved_plan),
        cmocka_unit_test(test_errors),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
