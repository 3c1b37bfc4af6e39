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
 * device that does not exist. The plan `run` makes counts the pipeline's own
 * diffusion passes (bytes per run against a hand computation).
 */
#include "testutil.h"

#include "st_writer.h"

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

/*
 * --type f32 (mkmodel's F16 bit patterns include NaNs, which no quantization
 * takes): the session keeps what the plan counts, on a device where the
 * model fits: the bytes moved onto it are the loader's for the same type
 * (tierload load --dtype f32, bytes_out), and every acquired byte checks
 * against a conversion of the file's.
 */
static void test_run_converts(void **state) {
    (void)state;
    char *dir;
    char *p = model(&dir);
    tu_run r = tu_cli_run("load", p, "--dtype", "f32", "--json", NULL);
    if (r.status != 0) fail_msg("load: exit %d: %s", r.status, r.err);
    cJSON *lj = cJSON_Parse(r.out);
    assert_non_null(lj);
    uint64_t out = num(lj, "bytes_out"), in = num(lj, "bytes");
    assert_true(out > in);
    cJSON_Delete(lj);
    tu_run_free(&r);
    cJSON *j = run_json(p, "rq=1G", "--type=f32");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "totals");
    assert_int_equal(num(t, "hash_mismatches"), 0);
    assert_true(num(t, "tensors_checked") > 0);
    assert_int_equal(num(t, "bytes_to_devices"), out);
    cJSON_Delete(j);
    tu_tmpdir_rm(dir);
    free(p);
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

/* The component's object in a plan or run document's "components" array. */
static const cJSON *component(const cJSON *doc, const char *name) {
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(doc, "components")) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(c, "name");
        if (cJSON_IsString(n) && !strcmp(n->valuestring, name)) return c;
    }
    fail_msg("no component %s", name);
    return NULL;
}

/*
 * A diffusion model of one non-layer tensor img_in [32, 256] F16 (16 KiB)
 * and four layers double_blocks.k [128, 256] F16 (64 KiB each), on a sim GPU
 * of 160 KiB with no compute reserve. Whole (272 KiB) it does not fit; it
 * streams with two buffers of the largest layer (128 KiB), and the 32 KiB
 * left keep img_in (16 KiB) resident, not a layer. Each pass streams the
 * four layers: 4 x 64 KiB = 262144 bytes; 8 passes move 2097152 per run.
 */
static void test_plan_counts_the_pipeline_steps(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *p = tu_path(dir, "steps.safetensors");
    const sw_tensor t[] = {{"img_in.weight", "F16", 2, {32, 256}},
                           {"double_blocks.0.img_attn.qkv.weight", "F16", 2, {128, 256}},
                           {"double_blocks.1.img_attn.qkv.weight", "F16", 2, {128, 256}},
                           {"double_blocks.2.img_attn.qkv.weight", "F16", 2, {128, 256}},
                           {"double_blocks.3.img_attn.qkv.weight", "F16", 2, {128, 256}}};
    size_t len;
    uint8_t *img = sw_build(t, 5, NULL, true, &len);
    assert_true(sw_write_file(p, img, len));
    free(img);
    const uint64_t per_pass = 4 * 128 * 256 * 2;
    /* the plan run prints (--fit-dry-run) counts the pipeline's 8 passes, not the default 20 */
    tu_run r = tu_cli_run("run", p, "--sim", "st0=160K", "--reserve", "diffusion=0", "--pipeline",
                          "diffusion*8", "--fit-dry-run", "--json", NULL);
    assert_int_equal(r.status, 0);
    cJSON *doc = cJSON_Parse(r.out);
    assert_non_null(doc);
    const cJSON *d = component(doc, "diffusion");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(d, "mode")->valuestring, "stream");
    assert_int_equal(num(d, "moved_per_run"), 8 * per_pass);
    assert_int_equal(num(doc, "moved_per_run"), 8 * per_pass);
    cJSON_Delete(doc);
    tu_run_free(&r);
    /* the run does what the plan says: after the first pass (which also loads img_in), each
       pass moves one pass's bytes */
    r = tu_cli_run("run", p, "--sim", "st1=160K", "--reserve", "diffusion=0", "--pipeline",
                   "diffusion*8", "--json", NULL);
    assert_int_equal(r.status, 0);
    doc = cJSON_Parse(r.out);
    assert_non_null(doc);
    const cJSON *phases = cJSON_GetObjectItemCaseSensitive(doc, "phases");
    assert_int_equal(cJSON_GetArraySize(phases), 8);
    for (int i = 1; i < 8; i++)
        assert_int_equal(num(cJSON_GetArrayItem(phases, i), "bytes_to_devices"), per_pass);
    cJSON_Delete(doc);
    tu_run_free(&r);
    /* --steps without a pipeline: the default pipeline runs diffusion that many times */
    r = tu_cli_run("run", p, "--sim", "st2=160K", "--reserve", "diffusion=0", "--steps", "3",
                   "--json", NULL);
    assert_int_equal(r.status, 0);
    doc = cJSON_Parse(r.out);
    assert_non_null(doc);
    int diffusion_passes = 0;
    const cJSON *ph;
    cJSON_ArrayForEach(ph, cJSON_GetObjectItemCaseSensitive(doc, "phases"))
        diffusion_passes += strstr(cJSON_GetObjectItemCaseSensitive(ph, "name")->valuestring,
                                   "diffusion") != NULL;
    assert_int_equal(diffusion_passes, 3);
    cJSON_Delete(doc);
    tu_run_free(&r);
    /* --steps that disagrees with the pipeline: a usage error */
    r = tu_cli_run("run", p, "--sim", "st3=160K", "--steps", "20", "--pipeline", "diffusion*8",
                   NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "--steps 20"));
    tu_run_free(&r);
    free(p);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_regimes),
        cmocka_unit_test(test_run_converts),
        cmocka_unit_test(test_saved_plan),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_plan_counts_the_pipeline_steps),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
