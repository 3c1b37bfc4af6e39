/*
 * test_index_scale.c — a hostile shard index of 100,000 entries, each naming
 * its own missing shard (3.4 MB, far under the 64 MiB index cap): discovery
 * completes and reports all of them missing, listing the first ones in name
 * order. Discovery is linear in the entries (a hash map from shard path to
 * file, sorts for the order); this test checks what it reports, and the
 * ctest timeout stands guard over a return of the quadratic search.
 * A second index with 100,000 tensors spread over two present shards checks
 * that the entries still map to the right files at that size.
 */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

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

static void test_many_missing_shards(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *idx = tu_path(dir, "m.safetensors.index.json");
    char *json = big_index(N_ENTRIES, true);
    tu_write_file(idx, json, strlen(json));
    const char *paths[] = {idx};
    tl_model *m = NULL;
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_ERR_NOT_FOUND);
    assert_null(m);
    const char *msg = tl_last_error();
    assert_non_null(strstr(msg, "100000 shards missing: s-0000001.safetensors, "
                                "s-0000002.safetensors"));
    assert_non_null(strstr(msg, ", ..."));
    free(json);
    free(idx);
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
