/*
 * test_rpc_cli.c — `--rpc` on the CLI, as a user types it, against ggml-rpc-server
 * processes on 127.0.0.1: `devices --rpc` lists the server's device with the
 * memory the server reports, `plan` and `run` place weights on it (run checks
 * every byte and multiplies each 2-D weight there with ggml), and endpoints
 * that are malformed (exit 2) or closed (exit 9) are named in the error. The
 * link to a server is measured when it is added, or taken from HOST:PORT@BW
 * (1gbit is 125,000,000 bytes/s; 1250M is 1,310,720,000).
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

static void test_link(void **state) {
    (void)state;
    TU_NEED_GGML();
    tu_rpc srv;
    char why[256];
    if (!tu_rpc_start(&srv, why, sizeof why)) fail_msg("%s", why);
    /* measured: some bandwidth and round trip above 0, said to be measured */
    tu_run r = tu_cli_run("devices", "--rpc", srv.endpoint, "--json", NULL);
    if (r.status != 0) fail_msg("devices: %d %s", r.status, r.err);
    const char *l = strstr(r.out, "\"link\":{\"bandwidth\":");
    assert_non_null(l);
    assert_true(strtod(l + strlen("\"link\":{\"bandwidth\":"), NULL) > 0);
    const char *lat = strstr(l, "\"latency\":");
    assert_non_null(lat);
    assert_true(strtod(lat + strlen("\"latency\":"), NULL) > 0);
    assert_non_null(strstr(l, "\"measured\":true"));
    /* the host's own devices have no link: one link in all, the server's device's */
    assert_ptr_equal(strstr(r.out, "\"link\""), l);
    assert_null(strstr(l + 1, "\"link\""));
    tu_run_free(&r);
    /* given in bits per second (decimal, as tc writes them) and in bytes per second */
    char ep[256];
    snprintf(ep, sizeof ep, "%s@1gbit", srv.endpoint);
    r = tu_cli_run("devices", "--rpc", ep, "--json", NULL);
    if (r.status != 0) fail_msg("devices: %d %s", r.status, r.err);
    assert_non_null(strstr(r.out, "\"link\":{\"bandwidth\":125000000,"));
    assert_non_null(strstr(r.out, "\"measured\":false"));
    tu_run_free(&r);
    snprintf(ep, sizeof ep, "%s@1250M", srv.endpoint);
    r = tu_cli_run("devices", "--rpc", ep, NULL);
    if (r.status != 0) fail_msg("devices: %d %s", r.status, r.err);
    assert_non_null(strstr(r.out, "link 1.22 GiB/s given"));
    tu_run_free(&r);
    /* a bad bandwidth, and the same endpoint twice with different ones: syntax errors */
    const char *bad[] = {"@", "@0", "@fast", "@10xbit", "@-1G"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(ep, sizeof ep, "%s%s", srv.endpoint, bad[i]);
        r = tu_cli_run("devices", "--rpc", ep, NULL);
        if (r.status != 2) fail_msg("%s: status %d, not 2", ep, r.status);
        assert_non_null(strstr(r.err, srv.endpoint));
        tu_run_free(&r);
    }
    snprintf(ep, sizeof ep, "%s@1G,%s@10gbit", srv.endpoint, srv.endpoint);
    r = tu_cli_run("devices", "--rpc", ep, NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "given twice"));
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
        cmocka_unit_test(test_link),
        cmocka_unit_test(test_bad_endpoints),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
