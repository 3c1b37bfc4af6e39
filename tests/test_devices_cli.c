/*
 * test_devices_cli.c — `tierload devices`: the exact --json shape
 * ({"devices":[{name,kind,total,free,host_pointer,async}]}, integers and
 * booleans), --sim devices in it, the human table, a clean stderr without
 * --verbose, and usage errors for a bad spec.
 */
#include "helpers/testutil.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

static const cJSON *find_dev(const cJSON *arr, const char *name) {
    const cJSON *d;
    cJSON_ArrayForEach(d, arr) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(d, "name");
        if (cJSON_IsString(n) && !strcmp(n->valuestring, name)) return d;
    }
    return NULL;
}

static void test_json(void **state) {
    (void)state;
    tu_run r = tu_cli_run("devices", "--sim", "gpu0=8G,gpu1=4G:bw=16G", "--json", NULL);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.err, "");
    cJSON *root = cJSON_Parse(r.out);
    assert_non_null(root);
    assert_int_equal(cJSON_GetArraySize(root), 1);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "devices");
    assert_true(cJSON_IsArray(arr));
    const cJSON *d;
    const char *keys[] = {"name", "kind", "total", "free", "host_pointer", "async"};
    cJSON_ArrayForEach(d, arr) {
        assert_int_equal(cJSON_GetArraySize(d), 6);
        const cJSON *it = d->child;
        for (int k = 0; k < 6; k++, it = it->next)
            assert_string_equal(it->string, keys[k]);
        assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(d, "name")));
        assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(d, "kind")));
        assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(d, "total")));
        assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(d, "free")));
        assert_true(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(d, "host_pointer")));
        assert_true(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(d, "async")));
    }
    const cJSON *cpu = find_dev(arr, "cpu");
    assert_non_null(cpu);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(cpu, "kind")->valuestring, "cpu");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cpu, "host_pointer")));
    const cJSON *g0 = find_dev(arr, "gpu0"), *g1 = find_dev(arr, "gpu1");
    assert_non_null(g0);
    assert_non_null(g1);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(g0, "kind")->valuestring, "sim");
    assert_true(cJSON_GetObjectItemCaseSensitive(g0, "total")->valuedouble == 8589934592.0);
    assert_true(cJSON_GetObjectItemCaseSensitive(g0, "free")->valuedouble == 8589934592.0);
    assert_true(cJSON_GetObjectItemCaseSensitive(g1, "total")->valuedouble == 4294967296.0);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(g0, "host_pointer")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g0, "async")));
    /* integers, not floats, in the text */
    assert_non_null(strstr(r.out, "\"total\":8589934592,"));
    cJSON_Delete(root);
    tu_run_free(&r);
}

static void test_human(void **state) {
    (void)state;
    tu_run r = tu_cli_run("devices", "--sim=cuda0=512M", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "cpu"));
    assert_non_null(strstr(r.out, "cuda0"));
    assert_non_null(strstr(r.out, "512.00 MiB"));
    assert_non_null(strstr(r.out, "sim"));
    assert_string_equal(r.err, "");
    tu_run_free(&r);
    r = tu_cli_run("devices", "--help", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "--sim"));
    tu_run_free(&r);
}

static void test_verbose_reason_on_stderr(void **state) {
    (void)state;
    tu_run r = tu_cli_run("devices", "--json", "--verbose", NULL);
    assert_int_equal(r.status, 0);
    cJSON *root = cJSON_Parse(r.out); /* stdout stays pure JSON */
    assert_non_null(root);
    /*
     * stderr says why there is no CUDA device, with the same reason this
     * process finds (same environment), on one line; with CUDA devices it
     * says nothing.
     */
    const char *why = tl_device_cuda_reason();
    bool has_cuda = find_dev(cJSON_GetObjectItemCaseSensitive(root, "devices"), "cuda0") != NULL;
    if (*why) {
        assert_false(has_cuda);
        char want[1200];
        snprintf(want, sizeof want, "tierload: %s\n", why);
        assert_string_equal(r.err, want);
    } else {
        assert_true(has_cuda);
        assert_string_equal(r.err, "");
    }
    cJSON_Delete(root);
    tu_run_free(&r);
    /* without --verbose the reason is not printed */
    r = tu_cli_run("devices", "--json", NULL);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.err, "");
    tu_run_free(&r);
}

static void test_errors(void **state) {
    (void)state;
    tu_run r = tu_cli_run("devices", "--sim", "gpu0=8X", NULL);
    assert_int_equal(r.status, 2);
    assert_string_equal(r.out, "");
    assert_non_null(strstr(r.err, "bad size"));
    tu_run_free(&r);
    r = tu_cli_run("devices", "--sim", "gpu0=1G,gpu0=2G", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "duplicate"));
    tu_run_free(&r);
    r = tu_cli_run("devices", "--sim", "cpu=1G", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "already registered"));
    tu_run_free(&r);
    r = tu_cli_run("devices", "--sim", NULL);
    assert_int_equal(r.status, 2);
    tu_run_free(&r);
    r = tu_cli_run("devices", "--bogus", NULL);
    assert_int_equal(r.status, 2);
    tu_run_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_human),
        cmocka_unit_test(test_verbose_reason_on_stderr),
        cmocka_unit_test(test_errors),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
