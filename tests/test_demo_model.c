/*
 * test_demo_model.c — the demo's generated checkpoint (small variant, in a
 * private cache folder) against Stable Diffusion 1.x: every tensor name and
 * shape of an independent list (tests/scripts/check_sd1_layout.py, which
 * first checks its own list against SD 1.5's published parameter counts),
 * every value finite, biases 0, norm weights 1, weights with standard
 * deviation 1/sqrt(fan_in), read with numpy. And the cache rule: a file with
 * the layout's size but another layout version in its metadata is made
 * again, one with the current version is reused. Without python3 and numpy
 * the layout check skips and says why (fails with CI=true).
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct { char *dir, *model; } G;

static int group_setup(void **st) {
    (void)st;
    G.dir = tu_tmpdir();
    G.model = tu_path(G.dir, "sd-demo-small.safetensors");
    tu_run r = tu_cli_run("demo", "--small", "--cache-dir", G.dir, "--pipeline", "cond", NULL);
    if (r.status || !strstr(r.out, "generating")) {
        fprintf(stderr, "demo: exit %d:\n%s\n%s\n", r.status, r.out, r.err);
        tu_run_free(&r);
        return -1;
    }
    tu_run_free(&r);
    return 0;
}

static int group_teardown(void **st) {
    (void)st;
    tu_tmpdir_rm(G.dir);
    free(G.model);
    return 0;
}

static void test_model_is_sd1(void **state) {
    (void)state;
    if (access("/usr/bin/python3", X_OK) != 0) {
        if (tu_in_ci()) fail_msg("no /usr/bin/python3 (apt-get install python3-numpy)");
        TU_SKIP("skipped: no /usr/bin/python3 (apt-get install python3-numpy)");
    }
    char script[1024];
    snprintf(script, sizeof script, "%s/tests/scripts/check_sd1_layout.py",
             getenv("TL_SOURCE_DIR"));
    char *argv[] = {"/usr/bin/python3", script, G.model, "--small", NULL};
    tu_run r = tu_run_argv(argv);
    if (r.status == 77) {
        if (tu_in_ci()) fail_msg("%s", r.out);
        tu_skip_note("skipped: %s", r.out);
        tu_run_free(&r);
        skip();
    }
    if (r.status) fail_msg("check_sd1_layout.py: exit %d\n%s%s", r.status, r.out, r.err);
    assert_non_null(strstr(r.out, "1130 tensors as SD 1.x"));
    tu_run_free(&r);
}

/* Change the layout version in the file's metadata in place (same size). */
static void set_other_version(const char *path) {
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    uint64_t hl;
    assert_int_equal(fread(&hl, 8, 1, f), 1);
    char *hdr = malloc(hl + 1);
    assert_non_null(hdr);
    assert_int_equal(fread(hdr, 1, hl, f), hl);
    hdr[hl] = 0;
    const char *key = "\"tierload_demo_layout\":\"";
    char *v = strstr(hdr, key);
    assert_non_null(v);
    v += strlen(key);
    *v = *v == '0' ? '1' : '0';
    assert_int_equal(fseek(f, 8, SEEK_SET), 0);
    assert_int_equal(fwrite(hdr, 1, hl, f), hl);
    assert_int_equal(fclose(f), 0);
    free(hdr);
}

static void test_reuse_keyed_on_layout_version(void **state) {
    (void)state;
    struct stat s0, s1;
    assert_int_equal(stat(G.model, &s0), 0);
    tu_run r = tu_cli_run("demo", "--small", "--cache-dir", G.dir, "--pipeline", "cond", NULL);
    if (r.status) fail_msg("demo: exit %d: %s", r.status, r.err);
    assert_non_null(strstr(r.out, "reusing"));
    tu_run_free(&r);

    set_other_version(G.model);
    assert_int_equal(stat(G.model, &s1), 0);
    assert_int_equal(s0.st_size, s1.st_size);
    r = tu_cli_run("demo", "--small", "--cache-dir", G.dir, "--pipeline", "cond", NULL);
    if (r.status) fail_msg("demo: exit %d: %s", r.status, r.err);
    assert_non_null(strstr(r.out, "generating"));
    assert_null(strstr(r.out, "reusing"));
    tu_run_free(&r);

    /* made again with the current version: reused next time */
    r = tu_cli_run("demo", "--small", "--cache-dir", G.dir, "--pipeline", "cond", NULL);
    if (r.status) fail_msg("demo: exit %d: %s", r.status, r.err);
    assert_non_null(strstr(r.out, "reusing"));
    tu_run_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_is_sd1),
        cmocka_unit_test(test_reuse_keyed_on_layout_version),
    };
    return tu_exit(cmocka_run_group_tests(tests, group_setup, group_teardown));
}
