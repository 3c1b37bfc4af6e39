/*
 * test_sdcpp_flags.c — stable-diffusion.cpp's device and auto-fit flags on
 * `plan` and `run`: each alias gives exactly the plan (the JSON document,
 * byte for byte) of the canonical flags it stands for; --list-devices prints
 * what `tierload devices` prints; components tierload does not model are
 * accepted with a note; --fit-dry-run prints the plan and runs nothing;
 * --help shows every alias as "= ...".
 */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#define MAXA 24

/* `tierload <argv...>` with a NULL-terminated list */
static tu_run run_list(const char *const *args) {
    char *argv[MAXA + 2];
    int n = 0;
    argv[n++] = (char *)tu_cli();
    for (; *args && n < MAXA; args++) argv[n++] = (char *)*args;
    argv[n] = NULL;
    return tu_run_argv(argv);
}

static tu_run plan_with(const char *devices, const char *a1, const char *a2, const char *a3) {
    const char *args[] = {"plan", "--profile", "sdxl", "--devices", devices, "--json", a1, a2, a3, NULL};
    return run_list(args);
}

typedef struct alias_case {
    const char *alias[2];     /* the stable-diffusion.cpp flag (and value) */
    const char *canonical[2]; /* what it stands for */
    const char *canon_devices; /* devices of the canonical run (NULL: the same) */
} alias_case;

static const char *const DEVS = "cuda0=12G,cuda1=8G";

static const alias_case cases[] = {
    {{"--main-backend-device", "cuda1"}, {"--backend", "default=cuda1"}, NULL},
    {{"--diffusion-backend-device", "cuda1"}, {"--backend", "diffusion=cuda1"}, NULL},
    {{"--clip-backend-device", "cpu"}, {"--backend", "cond=cpu"}, NULL},
    {{"--vae-backend-device", "cuda1"}, {"--backend", "vae=cuda1"}, NULL},
    {{"--control-net-backend-device", "cpu"}, {"--backend", "controlnet=cpu"}, NULL},
    {{"--params-backend", "cpu"}, {"--offload-to-cpu", NULL}, NULL},
    {{"--no-auto-fit", NULL}, {"--backend", "default=cuda0"}, NULL},
    {{"--auto-fit", NULL}, {NULL, NULL}, NULL},
    {{"--no-multi-gpu", NULL}, {NULL, NULL}, "cuda0=12G"},
    {{"--fit-target", "3G"}, {"--headroom", "3G"}, NULL},
    {{"--fit-compute-reserve-dit", "5G"}, {"--reserve", "diffusion=5G"}, NULL},
    {{"--fit-compute-reserve-vae", "3G"}, {"--reserve", "vae=3G"}, NULL},
    {{"--fit-compute-reserve-cond", "1500M"}, {"--reserve", "cond=1500M"}, NULL},
};

static void test_each_alias_equals_its_canonical_flags(void **state) {
    (void)state;
    tu_run plain = plan_with(DEVS, NULL, NULL, NULL);
    assert_int_equal(plain.status, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const alias_case *c = &cases[i];
        tu_run a = plan_with(DEVS, c->alias[0], c->alias[1], NULL);
        tu_run b = plan_with(c->canon_devices ? c->canon_devices : DEVS, c->canonical[0],
                             c->canonical[1], NULL);
        if (a.status != 0 || b.status != 0)
            fail_msg("%s: exit %d / %d: %s %s", c->alias[0], a.status, b.status, a.err, b.err);
        if (strcmp(a.out, b.out) != 0) fail_msg("%s: the plan differs from its canonical flags", c->alias[0]);
        /* and each one that changes something changes the plan (sdxl has no controlnet) */
        if ((c->canonical[0] || c->canon_devices) && strstr(c->alias[0], "control-net") == NULL)
            if (!strcmp(a.out, plain.out)) fail_msg("%s: the plan did not change", c->alias[0]);
        tu_run_free(&a);
        tu_run_free(&b);
    }
    tu_run_free(&plain);
}

static void test_no_auto_fit_with_main_device_and_combined(void **state) {
    (void)state;
    /* --no-auto-fit with a main device: every unplaced component there */
    tu_run a = plan_with(DEVS, "--no-auto-fit", "--main-backend-device", "cuda1");
    tu_run b = plan_with(DEVS, "--backend", "default=cuda1", NULL);
    assert_int_equal(a.status, 0);
    assert_string_equal(a.out, b.out);
    tu_run_free(&a);
    tu_run_free(&b);
    /* two reserve aliases together = one --reserve list */
    const char *args1[] = {"plan", "--profile", "sdxl", "--devices", DEVS, "--json",
                           "--fit-compute-reserve-dit", "5G", "--fit-compute-reserve-vae", "3G", NULL};
    const char *args2[] = {"plan", "--profile", "sdxl", "--devices", DEVS, "--json",
                           "--reserve", "diffusion=5G,vae=3G", NULL};
    a = run_list(args1);
    b = run_list(args2);
    assert_int_equal(a.status, 0);
    assert_string_equal(a.out, b.out);
    tu_run_free(&a);
    tu_run_free(&b);
}

static void test_unmodelled_components_accepted_with_a_note(void **state) {
    (void)state;
    static const char *const flags[] = {"--tae-backend-device", "--upscaler-backend-device",
                                        "--photomaker-backend-device", "--vision-backend-device"};
    tu_run plain = plan_with(DEVS, NULL, NULL, NULL);
    for (size_t i = 0; i < 4; i++) {
        tu_run a = plan_with(DEVS, flags[i], "cuda1", NULL);
        assert_int_equal(a.status, 0);
        assert_string_equal(a.out, plain.out);
        assert_non_null(strstr(a.err, flags[i]));
        assert_non_null(strstr(a.err, "no such component"));
        tu_run_free(&a);
    }
    tu_run_free(&plain);
}

static void test_list_devices_and_help(void **state) {
    (void)state;
    const char *l1[] = {"plan", "--list-devices", "--sim", "ld0=1G", NULL};
    const char *l2[] = {"devices", "--sim", "ld0=1G", NULL};
    tu_run a = run_list(l1), b = run_list(l2);
    assert_int_equal(a.status, 0);
    assert_int_equal(b.status, 0);
    /* the same listing (the host's free memory moves between the two runs: compare the sim line) */
    const char *la = strstr(a.out, "ld0"), *lb = strstr(b.out, "ld0");
    assert_non_null(la);
    assert_non_null(lb);
    size_t na = strcspn(la, "\n"), nb = strcspn(lb, "\n");
    assert_int_equal(na, nb);
    assert_memory_equal(la, lb, na);
    assert_int_equal(strlen(a.out) > 0, strlen(b.out) > 0);
    tu_run_free(&a);
    tu_run_free(&b);
    const char *r1[] = {"run", "--list-devices", NULL};
    a = run_list(r1);
    assert_int_equal(a.status, 0);
    tu_run_free(&a);
    static const char *const shown[] = {
        "--main-backend-device DEV        = --backend default=DEV",
        "--diffusion-backend-device DEV   = --backend diffusion=DEV",
        "--clip-backend-device DEV        = --backend cond=DEV",
        "--vae-backend-device DEV         = --backend vae=DEV",
        "--control-net-backend-device DEV = --backend controlnet=DEV",
        "--list-devices                   = tierload devices",
        "--params-backend cpu             = --offload-to-cpu",
        "--no-auto-fit                    = --backend default=MAIN",
        "--fit-target SIZE                = --headroom SIZE",
        "--fit-compute-reserve-dit SIZE   = --reserve diffusion=SIZE",
        "--fit-compute-reserve-vae SIZE   = --reserve vae=SIZE",
        "--fit-compute-reserve-cond SIZE  = --reserve cond=SIZE",
        "--fit-dry-run                    = print the plan and stop",
        "--no-multi-gpu                   = only the main GPU",
        "--vision-backend-device DEV      = accepted",
    };
    for (int cmd = 0; cmd < 2; cmd++) {
        const char *h[] = {cmd ? "run" : "plan", "--help", NULL};
        a = run_list(h);
        assert_int_equal(a.status, 0);
        for (size_t i = 0; i < sizeof shown / sizeof shown[0]; i++)
            if (!strstr(a.out, shown[i])) fail_msg("%s --help lacks '%s'", h[0], shown[i]);
        tu_run_free(&a);
    }
}

static void test_run_fit_dry_run_and_aliases(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *m = tu_path(dir, "m.safetensors");
    tu_run r = tu_cli_run("mkmodel", m, "--size", "16M", "--tensors", "60", "--profile", "sdxl", NULL);
    assert_int_equal(r.status, 0);
    tu_run_free(&r);
    /* dry run: the plan `plan` prints, and no phase runs */
    const char *a1[] = {"run", m, "--devices", "dry0=64M,cpu=8G", "--fit-dry-run", "--fit-compute-reserve-dit", "8M", NULL};
    const char *a2[] = {"plan", m, "--devices", "dry0=64M,cpu=8G", "--reserve", "diffusion=8M", NULL};
    tu_run a = run_list(a1), b = run_list(a2);
    assert_int_equal(a.status, 0);
    assert_int_equal(b.status, 0);
    assert_string_equal(a.out, b.out);
    assert_null(strstr(a.out, "hash mismatches"));
    tu_run_free(&a);
    tu_run_free(&b);
    /* run with an alias carries out the plan of the canonical flags: same JSON report shape */
    const char *a3[] = {"run", m, "--devices", "dry1=64M,cpu=8G", "--fit-dry-run", "--json", "--clip-backend-device", "cpu", NULL};
    const char *a4[] = {"plan", m, "--devices", "dry1=64M,cpu=8G", "--json", "--backend", "cond=cpu", NULL};
    a = run_list(a3);
    b = run_list(a4);
    assert_int_equal(a.status, 0);
    assert_string_equal(a.out, b.out);
    tu_run_free(&a);
    tu_run_free(&b);
    free(m);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_alias_equals_its_canonical_flags),
        cmocka_unit_test(test_no_auto_fit_with_main_device_and_combined),
        cmocka_unit_test(test_unmodelled_components_accepted_with_a_note),
        cmocka_unit_test(test_list_devices_and_help),
        cmocka_unit_test(test_run_fit_dry_run_and_aliases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
