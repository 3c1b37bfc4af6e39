/*
 * test_index_scale.c — a hostile shard index of 100,000 entries, each naming
 * its own missing shard (3.4 MB, far under the 64 MiB index cap): discovery
 * completes and reports all of them missing, listing the first ones in name
 * order. Discovery is linear in the entries (a hash map from shard path to
 * file, sorts for the order): the same open with 10,000 entries and with
 * 100,000, in one run, must take less than 30 times as long for ten times the
 * entries (a quadratic search takes about 100 times; process CPU time, the
 * fastest of three tries each).
 * A second index with 100,000 tensors spread over two present shards checks
 * that the entries still map to the right files at that size.
 */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_ENTRIES 100000

static char *big_index(size_t n, bool distinct_shards) {
    size_t cap = n * 64 + 64, len = 0;
    char *j = malloc(cap);
    assert_non_null(j);
    len += (size_t)snprintf(j + len, cap - len, "{\"weight_map\":{");
    for (size_t i = 0; i < n; i++) {
        /* descending shard numbers: the report must sort them */
        size_t shard = distinct_shards ? n - i : 1 + (i % 2);
        len += (size_t)snprintf(j + len, cap - len, "%s\"t%zu\":\"s-%07zu.safetensors\"",
                                i ? "," : "", i, shard);
    }
    len += (size_t)snprintf(j + len, cap - len, "}}");
    return j;
}

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Open an index of n entries, each its own missing shard; the fastest CPU time of three. */
static double open_missing(const char *dir, size_t n) {
    char *idx = tu_path(dir, "m.safetensors.index.json");
    char *json = big_index(n, true);
    tu_write_file(idx, json, strlen(json));
    const char *paths[] = {idx};
    double best = 1e30;
    for (int k = 0; k < 3; k++) {
        tl_model *m = NULL;
        double t0 = cpu_now();
        assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_ERR_NOT_FOUND);
        double t = cpu_now() - t0;
        if (t < best) best = t;
        assert_null(m);
        char want[64];
        snprintf(want, sizeof want, "%zu shards missing: s-0000001.safetensors, ", n);
        const char *msg = tl_last_error();
        assert_non_null(strstr(msg, want));
        assert_non_null(strstr(msg, "s-0000002.safetensors"));
        assert_non_null(strstr(msg, ", ..."));
    }
    free(json);
    free(idx);
    return best;
}

static void test_many_missing_shards(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    double small = open_missing(dir, N_ENTRIES / 10), big = open_missing(dir, N_ENTRIES);
    print_message("%d entries: %.4f s, %d entries: %.4f s (ratio %.1f)\n", N_ENTRIES / 10, small,
                  N_ENTRIES, big, big / small);
    if (big > 30 * small)
        fail_msg("ten times the entries took %.0f times as long: not linear", big / small);
    tu_tmpdir_rm(dir);
}

static void test_many_entries_two_shards(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *idx = tu_path(dir, "m.safetensors.index.json");
    char *s1 = tu_path(dir, "s-0000001.safetensors"), *s2 = tu_path(dir, "s-0000002.safetensors");
    tu_copy_testdata("safetensors/f.safetensors", s1);
    tu_copy_testdata("safetensors/B.safetensors", s2);
    char *json = big_index(N_ENTRIES, false);
    tu_write_file(idx, json, strlen(json));
    const char *paths[] = {idx};
    tl_model *m = NULL;
    /* both shards are found once each; the first promise they do not keep is reported */
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_ERR_FORMAT);
    assert_non_null(strstr(tl_last_error(), "listed in the shard index is absent"));
    /* the same index with only the two real tensors opens, each in its shard */
    const char *ok = "{\"weight_map\":{\"f\":\"s-0000001.safetensors\","
                     "\"B\":\"s-0000002.safetensors\"}}";
    tu_write_file(idx, ok, strlen(ok));
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    assert_int_equal(tl_model_file_count(m), 2);
    assert_int_equal(tl_model_tensor(m, (size_t)tl_model_find(m, "B"))->file, 1);
    tl_model_close(m);
    free(json);
    free(s1);
    free(s2);
    free(idx);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_missing_shards),
        cmocka_unit_test(test_many_entries_two_shards),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
