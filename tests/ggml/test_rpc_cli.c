/*
 * test_rpc_cli.c — `--rpc` on the CLI, as a user types it, against ggml-rpc-server
 * processes on 127.0.0.1: `devices --rpc` lists the server's device with the
 * memory the server reports, `plan` and `run` place weights on it (run checks
 * every byte and multiplies each 2-D weight there with ggml), and endpoints
 * that are malformed (exit 2) or closed (exit 9) are named in the error.
 */
#include "rpc_server.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>


static void test_devices_plan_run(void **state) {
    (void)state;
    TU_NEED_GGML();
    tu_rpc srv;
    char why[256];
    if (!tu_rpc_start(&srv, why, sizeof why)) fail_msg("%s", why);
    tu_run r = tu_cli_run("devices", "--rpc", srv.endpoint, "--json", NULL);
    if (r.status != 0) fail_msg("devices: %d %s", r.status, r.err);
    assert_non_null(strstr(r.out, "\"name\":\"rpc0:0\""));
    tu_run_free(&r);
    const char *model = tu_testdata("gguf/tiny-llama-f16.gguf");
    r = tu_cli_run("plan", model, "--rpc", srv.endpoint, "--backend", "*=rpc0:0", "--reserve",
                   "other=0", "--json", NULL);
    if (r.status != 0) fail_msg("plan: %d %s", r.status, r.err);
    assert_non_null(strstr(r.out, "rpc0:0"));
    tu_run_free(&r);
    r = tu_cli_run("run", model, "--rpc", srv.endpoint, "--backend", "*=rpc0:0", "--reserve",
                   "other=0", "--pipeline", "other", "--compute", "ggml", "--json", NULL);
    if (r.status != 0) fail_msg("run: %d %s", r.status, r.err);
    assert_non_null(strstr(r.out, "\"hash_mismatches\":0"));
    assert_non_null(strstr(r.out, "\"product_mismatches\":0"));
    assert_null(strstr(r.out, "\"products\":0,"));
    tu_run_free(&r);
    tu_rpc_stop(&srv);
}

static void test_bad_endpoints(void **state) {
    (void)state;
    TU_NEED_GGML();
    tu_run r = tu_cli_run("devices", "--rpc", "localhost", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "localhost"));
    tu_run_free(&r);
    char ep[64];
    snprintf(ep, sizeof ep, "127.0.0.1:%d", tu_free_port());
    r = tu_cli_run("plan", tu_testdata("gguf/tiny-llama-f16.gguf"), "--rpc", ep, NULL);
    assert_int_equal(r.status, 9);
    assert_non_null(strstr(r.err, ep));
    tu_run_free(&r);
    r = tu_cli_run("plan", tu_testdata("gguf/tiny-llama-f16.gguf"), "--rpc", ep, "--devices",
                   "cuda0=8G", NULL);
    assert_int_equal(r.status, 2);
    tu_run_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_devices_plan_run),
        cmocka_unit_test(test_bad_endpoints),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
