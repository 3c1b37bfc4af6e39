/*
 * test_plan_links.c — the planner's link cost (tl_plan_options.links): two
 * hosts of equal memory, one behind a slow link listed first, one behind a
 * fast link. Without links the first one gets the diffusion model (ties go to
 * lower indices); with them the 20-pass diffusion model goes to the fast link
 * and the 1-pass cond model to the slow one. The expected link times are
 * worked out by hand below from the model in tierload.h: per pass one round
 * trip plus 2 MiB each way at the link's bandwidth, plus the weight bytes that
 * cross every run.
 */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MiB (1024ull * 1024ull)
#define GiB (1024ull * MiB)

static void summary(tl_plan_summary *s) {
    tl_plan_summary_init(s);
    for (int i = 0; i < 4; i++) /* diffusion: 4 layers of 1.5 GiB = 6 GiB */
        assert_int_equal(tl_plan_summary_add_layer(s, TL_COMP_DIFFUSION, 3 * GiB / 2, 0), TL_OK);
    for (int i = 0; i < 3; i++) /* cond: 3 layers of 1 GiB */
        assert_int_equal(tl_plan_summary_add_layer(s, TL_COMP_COND, GiB, 0), TL_OK);
}

static tl_plan *plan(const char *links, uint32_t phase_only) {
    tl_plan_summary s;
    summary(&s);
    tl_plan_device devs[4];
    size_t nd;
    /* 7 GiB each: the two components (9 GiB) do not fit on one */
    assert_int_equal(tl_plan_parse_devices("slow=7G,fast=7G", devs, 4, &nd), TL_OK);
    tl_plan_options o;
    tl_plan_options_init(&o);
    o.reserve = "diffusion=0,cond=0,vae=0,controlnet=0";
    o.links = links;
    o.phase_only = phase_only;
    tl_plan *p = NULL;
    assert_int_equal(tl_plan_create(&s, devs, nd, &o, &p), TL_OK);
    assert_true(tl_plan_feasible(p));
    tl_plan_summary_clear(&s);
    return p;
}

static const char *dev_of(const tl_plan *p, tl_component c) {
    tl_plan_decision d;
    assert_int_equal(tl_plan_decision_of(p, c, &d, sizeof d), TL_OK);
    assert_int_equal(d.n_devices, 1);
    return tl_plan_device_of(p, d.devices[0])->name;
}

static void test_fast_link_gets_the_passes(void **state) {
    (void)state;
    tl_plan *p = plan(NULL, 0);
    assert_string_equal(dev_of(p, TL_COMP_DIFFUSION), "slow"); /* no links: first device */
    tl_plan_link l;
    assert_int_equal(tl_plan_device_link(p, 0, &l, sizeof l), TL_ERR_NOT_FOUND);
    tl_plan_destroy(p);

    p = plan("slow=125M:lat=1ms, fast=1280M:lat=1ms", 0);
    assert_string_equal(dev_of(p, TL_COMP_DIFFUSION), "fast");
    assert_string_equal(dev_of(p, TL_COMP_COND), "slow");
    /* slow: cond, 1 pass: 1 ms + 4 MiB / 125 MiB/s = 0.001 + 0.032 */
    assert_int_equal(tl_plan_device_link(p, 0, &l, sizeof l), TL_OK);
    assert_true(fabs(l.bandwidth - 131072000.0) < 1e-6);
    assert_true(fabs(l.latency - 0.001) < 1e-12);
    assert_int_equal(l.passes, 1);
    assert_int_equal(l.push_once, 3 * GiB);
    assert_int_equal(l.per_run, 0);
    assert_true(fabs(l.seconds - 0.033) < 1e-9);
    /* fast: diffusion, 20 passes: 20 * (1 ms + 4 MiB / 1280 MiB/s) = 20 * 0.004125 */
    assert_int_equal(tl_plan_device_link(p, 1, &l, sizeof l), TL_OK);
    assert_int_equal(l.passes, 20);
    assert_int_equal(l.push_once, 6 * GiB);
    assert_true(fabs(l.seconds - 0.0825) < 1e-9);
    assert_int_equal(tl_plan_device_link(p, 2, &l, sizeof l), TL_ERR_NOT_FOUND); /* the host */
    assert_int_equal(tl_plan_device_link(p, 3, &l, sizeof l), TL_ERR_INVALID_ARG);

    /* the JSON document carries the links and reads back byte-identically */
    char *j1 = NULL, *j2 = NULL;
    assert_int_equal(tl_plan_to_json(p, &j1), TL_OK);
    assert_non_null(strstr(j1, "\"push_once\":\t6442450944"));
    tl_plan *q = NULL;
    assert_int_equal(tl_plan_from_json(j1, strlen(j1), &q), TL_OK);
    assert_int_equal(tl_plan_to_json(q, &j2), TL_OK);
    assert_string_equal(j1, j2);
    assert_int_equal(tl_plan_device_link(q, 1, &l, sizeof l), TL_OK);
    assert_int_equal(l.passes, 20);
    char *txt = NULL;
    assert_int_equal(tl_plan_to_text(p, &txt), TL_OK);
    assert_non_null(strstr(txt, "links ("));
    tl_free(txt);
    tl_free(j1);
    tl_free(j2);
    tl_plan_destroy(q);
    tl_plan_destroy(p);
}

/* Weights loaded for their phase only cross the link every run. */
static void test_phase_weights_cross_every_run(void **state) {
    (void)state;
    tl_plan *p = plan("slow=125M,fast=1280M", 1u << TL_COMP_DIFFUSION);
    tl_plan_link l;
    assert_string_equal(dev_of(p, TL_COMP_DIFFUSION), "fast");
    assert_int_equal(tl_plan_device_link(p, 1, &l, sizeof l), TL_OK);
    assert_int_equal(l.per_run, 6 * GiB);
    assert_int_equal(l.push_once, 0);
    /* 6 GiB / 1280 MiB/s + 20 * 4 MiB / 1280 MiB/s, no round trip given */
    assert_true(fabs(l.seconds - (6144.0 / 1280 + 20 * 4.0 / 1280)) < 1e-9);
    assert_string_equal(dev_of(p, TL_COMP_COND), "slow"); /* 3 GiB reloaded would cost 2.4 s */
    tl_plan_destroy(p);
}

static void test_bad_links(void **state) {
    (void)state;
    tl_plan_summary s;
    summary(&s);
    tl_plan_device devs[4];
    size_t nd;
    assert_int_equal(tl_plan_parse_devices("slow=7G,fast=7G", devs, 4, &nd), TL_OK);
    struct {
        const char *spec;
        tl_status want;
        const char *says;
    } cases[] = {
        {"nowhere=1G", TL_ERR_NOT_FOUND, "nowhere"},
        {"cpu=1G", TL_ERR_INVALID_ARG, "host"},
        {"fast=0", TL_ERR_INVALID_ARG, "bandwidth"},
        {"fast=quick", TL_ERR_INVALID_ARG, "bandwidth"},
        {"fast", TL_ERR_INVALID_ARG, "NAME=BW"},
        {"fast=1G:lat=soon", TL_ERR_INVALID_ARG, "latency"},
        {"fast=1G:mtu=9000", TL_ERR_INVALID_ARG, "unknown option"},
        {"fast=1G,fast=2G", TL_ERR_INVALID_ARG, "twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tl_plan_options o;
        tl_plan_options_init(&o);
        o.links = cases[i].spec;
        tl_plan *p = NULL;
        tl_status st = tl_plan_create(&s, devs, nd, &o, &p);
        if (st != cases[i].want || !strstr(tl_last_error(), cases[i].says))
            fail_msg("'%s': %d %s", cases[i].spec, st, tl_last_error());
        assert_null(p);
    }
    tl_plan_summary_clear(&s);
}

/* The CLI: --links on hypothetical devices, per-host lines in text and JSON. */
static void test_cli(void **state) {
    (void)state;
    tu_run r = tu_cli_run("plan", "--profile", "sdxl", "--devices", "slow=8G,fast=8G", "--links",
                          "slow=125M:lat=200us,fast=1250M:lat=200us", NULL);
    if (r.status != 0) fail_msg("plan: %d %s", r.status, r.err);
    assert_non_null(
        strstr(r.out, "diffusion  params    4.79 GiB  reserve    2.00 GiB  gpu on fast"));
    assert_non_null(strstr(r.out, "  slow       125.00 MiB/s, round trip 200 us"));
    tu_run_free(&r);
    r = tu_cli_run("plan", "--profile", "sdxl", "--devices", "slow=8G,fast=8G", "--links",
                   "slow=125M", "--json", NULL);
    if (r.status != 0) fail_msg("plan: %d %s", r.status, r.err);
    const char *l = strstr(r.out, "\"bandwidth\":");
    assert_non_null(l);
    assert_true(strtod(l + strlen("\"bandwidth\":"), NULL) == 131072000.0);
    assert_null(strstr(l + 1, "\"bandwidth\":")); /* fast has no link */
    tu_run_free(&r);
    /* the picture draws each host's link under its bars; a local device gets none */
    char *dir = tu_tmpdir(), *svg = tu_path(dir, "plan.svg");
    r = tu_cli_run("plan", "--profile", "sdxl", "--devices", "slow=8G,fast=8G", "--links",
                   "slow=125M:lat=200us", "--svg", svg, NULL);
    if (r.status != 0) fail_msg("plan --svg: %d %s", r.status, r.err);
    tu_run_free(&r);
    size_t n = 0;
    char *pic = tu_read_file(svg, &n);
    assert_non_null(strstr(pic, ">link 125.00 MiB/s, round trip 200 us: "));
    assert_null(strstr(strstr(pic, ">link ") + 1, ">link ")); /* one host only */
    free(pic);
    free(svg);
    tu_tmpdir_rm(dir);
    r = tu_cli_run("plan", "--profile", "sdxl", "--devices", "slow=8G", "--links", "fast=1G", NULL);
    assert_int_equal(r.status, 5); /* an unknown device, as in --backend */
    assert_non_null(strstr(r.err, "--links item 'fast=1G'"));
    tu_run_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_link_gets_the_passes),
        cmocka_unit_test(test_phase_weights_cross_every_run),
        cmocka_unit_test(test_bad_links),
        cmocka_unit_test(test_cli),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
