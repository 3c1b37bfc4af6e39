/*
 * test_plan_devices.c — how many GPUs a plan takes (TL_PLAN_MAX_GPUS = 64,
 * from hypothetical lists and from the registry), and that GPUs beyond a
 * limit are refused or reported, never dropped silently.
 */
#include "helpers/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GIB (1024ull * 1024 * 1024)

/* "cuda0=1G,...,cuda<n-2>=1G,cuda<n-1>=24G": only the last GPU holds a model. */
static char *many(int n) {
    char *spec = malloc(32 * (size_t)n + 1);
    size_t at = 0;
    for (int g = 0; g < n; g++)
        at += (size_t)sprintf(spec + at, "%scuda%d=%dG", g ? "," : "", g, g == n - 1 ? 24 : 1);
    return spec;
}

static void test_64_gpus(void **state) {
    (void)state;
    assert_int_equal(TL_PLAN_MAX_GPUS, 64);
    tl_plan_device d[TL_PLAN_MAX_DEVICES];
    size_t n;
    char *spec = many(64);
    assert_int_equal(tl_plan_parse_devices(spec, d, TL_PLAN_MAX_DEVICES, &n), TL_OK);
    free(spec);
    assert_int_equal(n, 65);
    assert_string_equal(d[63].name, "cuda63");
    assert_string_equal(d[64].name, "cpu");
    tl_plan_summary sum;
    assert_int_equal(tl_plan_summary_profile("sdxl", &sum), TL_OK);
    tl_plan *p = NULL;
    assert_int_equal(tl_plan_create(&sum, d, n, NULL, &p), TL_OK);
    assert_true(tl_plan_feasible(p));
    assert_int_equal(tl_plan_device_count(p), 65);
    /* only the 64th GPU (index 63) can hold the 4.8 GiB UNet with its reserve */
    tl_plan_decision dec;
    assert_int_equal(tl_plan_decision_of(p, TL_COMP_DIFFUSION, &dec, sizeof dec), TL_OK);
    assert_int_equal(dec.mode, TL_PLAN_MODE_GPU);
    assert_int_equal(dec.n_devices, 1);
    assert_int_equal(dec.devices[0], 63);
    assert_true(tl_plan_peak(p, 63, 1) > 4 * GIB);
    /* the JSON document reads back with all 65 devices */
    char *j;
    assert_int_equal(tl_plan_to_json(p, &j), TL_OK);
    tl_plan *q = NULL;
    if (tl_plan_from_json(j, strlen(j), &q)) fail_msg("%s", tl_last_error());
    assert_int_equal(tl_plan_device_count(q), 65);
    free(j);
    tl_plan_destroy(q);
    tl_plan_destroy(p);
    /* a forced split over GPUs with high indices */
    tl_plan_options o;
    tl_plan_options_init(&o);
    o.backend = "vae=cuda62&cuda63";
    o.reserve = "vae=0";
    assert_int_equal(tl_plan_create(&sum, d, n, &o, &p), TL_OK);
    assert_int_equal(tl_plan_decision_of(p, TL_COMP_VAE, &dec, sizeof dec), TL_OK);
    assert_int_equal(dec.mode, TL_PLAN_MODE_LAYER_SPLIT);
    assert_int_equal(dec.devices[0], 62);
    assert_int_equal(dec.devices[1], 63);
    tl_plan_destroy(p);
    tl_plan_summary_clear(&sum);
}

static void test_65_gpus_refused(void **state) {
    (void)state;
    tl_plan_device d[TL_PLAN_MAX_DEVICES + 1];
    size_t n;
    char *spec = many(65);
    assert_int_equal(tl_plan_parse_devices(spec, d, TL_PLAN_MAX_DEVICES, &n), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "more than 64 GPUs"));
    /* the planner itself names the count when given more than it handles */
    assert_int_equal(tl_plan_parse_devices(spec, d, TL_PLAN_MAX_DEVICES + 1, &n), TL_OK);
    free(spec);
    assert_int_equal(n, 66);
    tl_plan_summary sum;
    assert_int_equal(tl_plan_summary_profile("sd15", &sum), TL_OK);
    tl_plan *p = NULL;
    assert_int_equal(tl_plan_create(&sum, d, n, NULL, &p), TL_ERR_INVALID_ARG);
    assert_null(p);
    assert_non_null(strstr(tl_last_error(), "65 GPUs given, but a plan handles at most 64"));
    tl_plan_summary_clear(&sum);
}

/* GPUs registered now (real CUDA devices may be present). */
static size_t registered_gpus(void) {
    size_t count = tl_device_list(NULL, 0), gpus = 0;
    tl_device **list = calloc(count + 1, sizeof *list);
    count = tl_device_list(list, count);
    for (size_t i = 0; i < count; i++)
        gpus += tl_device_kind_of(list[i]) != TL_DEVICE_CPU;
    free(list);
    return gpus;
}

static void test_from_registry(void **state) {
    (void)state;
    tl_plan_device d[TL_PLAN_MAX_DEVICES];
    size_t n, dropped;
    size_t before = registered_gpus();
    if (before > 30) {
        TU_SKIP("%zu GPUs registered already, the test adds 40", before);
    }
    /* two sim specs of 20, with 1 GiB each */
    char spec[1024];
    for (int half = 0; half < 2; half++) {
        size_t at = 0;
        for (int g = 0; g < 20; g++)
            at += (size_t)snprintf(spec + at, sizeof spec - at, "%ssimp%d=1G", g ? "," : "",
                                   half * 20 + g);
        assert_int_equal(tl_device_sim_add(spec), TL_OK);
    }
    size_t gpus = before + 40;
    assert_int_equal(tl_plan_devices_from_registry(d, TL_PLAN_MAX_DEVICES, &n, &dropped), TL_OK);
    assert_int_equal(n, gpus + 1);
    assert_int_equal(dropped, 0);
    size_t hosts = 0, sims = 0;
    for (size_t i = 0; i < n; i++) {
        hosts += !d[i].is_gpu;
        if (!strncmp(d[i].name, "simp", 4)) {
            assert_true(d[i].is_gpu);
            assert_int_equal(d[i].total, GIB);
            assert_int_equal(d[i].free, GIB);
            char want[16];
            snprintf(want, sizeof want, "simp%zu", sims++);
            assert_string_equal(d[i].name, want); /* registration order */
        }
    }
    assert_int_equal(hosts, 1);
    assert_int_equal(sims, 40);
    /* room for the host and 10 GPUs: the rest is left out, and said so */
    assert_int_equal(tl_plan_devices_from_registry(d, 11, &n, &dropped), TL_OK);
    assert_int_equal(n, 11);
    assert_int_equal(dropped, gpus - 10);
    hosts = 0;
    for (size_t i = 0; i < n; i++)
        hosts += !d[i].is_gpu;
    assert_int_equal(hosts, 1);
    /* without a place to say it, leaving GPUs out is an error that names them */
    assert_int_equal(tl_plan_devices_from_registry(d, 11, &n, NULL), TL_ERR_INVALID_ARG);
    assert_int_equal(n, 0);
    assert_non_null(strstr(tl_last_error(), "simp39"));
    assert_non_null(strstr(tl_last_error(), "would be left out"));
    /* the devices plan directly */
    assert_int_equal(tl_plan_devices_from_registry(d, TL_PLAN_MAX_DEVICES, &n, NULL), TL_OK);
    tl_plan_summary sum;
    assert_int_equal(tl_plan_summary_profile("sd15", &sum), TL_OK);
    tl_plan *p = NULL;
    assert_int_equal(tl_plan_create(&sum, d, n, NULL, &p), TL_OK);
    assert_int_equal(tl_plan_device_count(p), gpus + 1);
    tl_plan_destroy(p);
    tl_plan_summary_clear(&sum);
}

/* `tierload plan --sim` with 64 simulated GPUs plans on all of them. */
static void test_cli_64_sims(void **state) {
    (void)state;
    char spec[2048];
    size_t at = 0;
    for (int g = 0; g < 64; g++)
        at += (size_t)snprintf(spec + at, sizeof spec - at, "%sgpu%d=%s", g ? "," : "", g,
                               g == 63 ? "24G" : "1G");
    tu_run r = tu_cli_run("plan", "--profile", "sdxl", "--sim", spec, "--json", NULL);
    if (strstr(r.err, "left out")) {
        /* real GPUs registered beside the sims: the CLI plans with 64 and names the others */
        assert_int_equal(r.status, 0);
        assert_non_null(strstr(r.err, "gpu63"));
        printf("note: %s", r.err);
        tu_run_free(&r);
        return;
    }
    if (r.status != 0) fail_msg("status %d: %s", r.status, r.err);
    tl_plan *p = NULL;
    if (tl_plan_from_json(r.out, strlen(r.out), &p)) fail_msg("%s", tl_last_error());
    assert_int_equal(tl_plan_device_count(p), 65);
    tl_plan_decision dec;
    assert_int_equal(tl_plan_decision_of(p, TL_COMP_DIFFUSION, &dec, sizeof dec), TL_OK);
    assert_int_equal(dec.mode, TL_PLAN_MODE_GPU);
    assert_string_equal(tl_plan_device_of(p, dec.devices[0])->name, "gpu63");
    tl_plan_destroy(p);
    tu_run_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_64_gpus),
        cmocka_unit_test(test_65_gpus_refused),
        cmocka_unit_test(test_from_registry),
        cmocka_unit_test(test_cli_64_sims),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
