/*
 * test_rpc_cli.c — `--rpc` on the CLI, as a user types it, against ggml-rpc-server
 * processes on 127.0.0.1: `devices --rpc` lists the server's device with the
 * memory the server reports, `plan` and `run` place weights on it (run checks
 * every byte and multiplies each 2-D weight there with ggml), and endpoints
 * that are malformed (exit 2) or closed (exit 9) are named in the error. The
 * link to a server is measured when it is added, or taken from HOST:PORT@BW
 * (1gbit is 125,000,000 bytes/s; 1250M is 1,310,720,000). A server with its
 * tensor cache (-c) is sent a model's weights once: the second run's bytes
 * over the connection are under 1% of the first's (the 16 MiB tensors go as
 * hashes), with every byte still checked.
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

/* The "sent" and "written" of the run's JSON "links" entry for rpc0:0. */
static void link_bytes(const char *out, double *sent, double *written) {
    const char *l = strstr(out, "\"links\":[{\"device\":\"rpc0:0\"");
    assert_non_null(l);
    const char *s = strstr(l, "\"sent\":"), *w = strstr(l, "\"written\":");
    assert_non_null(s);
    assert_non_null(w);
    *sent = strtod(s + strlen("\"sent\":"), NULL);
    *written = strtod(w + strlen("\"written\":"), NULL);
}

static void test_cache_second_run(void **state) {
    (void)state;
    TU_NEED_GGML();
    char *dir = tu_tmpdir();
    char *model = tu_path(dir, "m.gguf");
    /* 6 tensors of 16 MiB: above ggml's 10 MiB threshold for sending a hash first */
    tu_run r = tu_cli_run("mkmodel", model, "--size", "96M", "--tensors", "6", "--profile", "llm",
                          NULL);
    if (r.status != 0) fail_msg("mkmodel: %d %s", r.status, r.err);
    tu_run_free(&r);
    tu_rpc srv;
    char why[256];
    if (!tu_rpc_start_cached(&srv, dir, why, sizeof why)) fail_msg("%s", why);
    double sent[2], written[2];
    for (int i = 0; i < 2; i++) {
        r = tu_cli_run("run", model, "--rpc", srv.endpoint, "--backend", "*=rpc0:0", "--reserve",
                       "other=0", "--pipeline", "other", "--json", NULL);
        if (r.status != 0) fail_msg("run %d: %d %s", i + 1, r.status, r.err);
        assert_non_null(strstr(r.out, "\"hash_mismatches\":0"));
        link_bytes(r.out, &sent[i], &written[i]);
        tu_run_free(&r);
    }
    tu_rpc_stop(&srv);
    /* both runs wrote the 96 MiB; the first sent them, the second under 1% of that */
    assert_true(written[0] == 96.0 * 1024 * 1024 && written[1] == written[0]);
    if (!(sent[0] >= written[0])) fail_msg("first run sent %.0f of %.0f", sent[0], written[0]);
    if (!(sent[1] <= 0.01 * sent[0])) fail_msg("second run sent %.0f (first %.0f)", sent[1], sent[0]);
    tu_tmpdir_rm(dir);
    free(model);
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
        cmocka_unit_test(test_cache_second_run),
        cmocka_unit_test(test_bad_endpoints),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
