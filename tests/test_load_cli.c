/*
 * test_load_cli.c — `tierload load`: the human report, the --json schema
 * and values (bytes as integers equal to the tensor bytes, times consistent
 * with each other and the rate, the file's size, eviction, the memory
 * figures), mode
 * and dtype options, --evict leaving the file out of the page cache, the
 * direct fallback note and usage errors.
 */
#include "testutil.h"
#include "test_load_st.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

static void fill(void *buf, uint64_t off, uint64_t len, void *ctx) {
    (void)ctx;
    unsigned char *b = buf;
    for (uint64_t i = 0; i < len; i++)
        b[i] = (unsigned char)((off + i) * 31 + 7);
}

static char *dir, *path;

static int setup(void **st) {
    (void)st;
    dir = tu_tmpdir();
    path = tu_path(dir, "m.safetensors");
    st_tensor t[] = {
        {"x.w", "F16", 3u << 20, 2, NULL, fill, NULL},
        {"x.b", "BF16", 1001, 2, NULL, fill, NULL},
        {"y.ids", "I64", 257, 8, NULL, fill, NULL},
    };
    st_write(path, t, 3);
    return 0;
}

static int teardown(void **st) {
    (void)st;
    free(path);
    tu_tmpdir_rm(dir);
    return 0;
}

static uint64_t num(cJSON *o, const char *k) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    assert_non_null(v);
    assert_true(cJSON_IsNumber(v));
    return (uint64_t)v->valuedouble;
}

static double dnum(cJSON *o, const char *k) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v)) fail_msg("no number \"%s\"", k);
    return v->valuedouble;
}

static void test_json(void **st) {
    (void)st;
    tu_run r =
        tu_cli_run("load", "--json", "--mode", "buffered", "--evict", "--verify", path, NULL);
    if (r.status != 0) print_error("%s\n", r.err);
    assert_int_equal(r.status, 0);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    uint64_t bytes = num(j, "bytes");
    assert_int_equal(bytes, (3u << 21) + 2002 + 257 * 8);
    char want[64];
    snprintf(want, sizeof want, "\"bytes\":%llu,", (unsigned long long)bytes);
    assert_non_null(strstr(r.out, want));         /* an integer, not 6.29e6 */
    assert_int_equal(num(j, "bytes_out"), bytes); /* no conversion */
    assert_int_equal(num(j, "threads"), 2);       /* the default */
    /* the times are consistent with each other; gbps is bytes over the total wall time */
    double seconds = dnum(j, "seconds"), read_s = dnum(j, "read_seconds");
    assert_true(seconds > 0 && read_s > 0 && read_s <= seconds);
    double open_s = dnum(j, "open_seconds"); /* timed apart, before the load */
    assert_true(open_s > 0 && open_s < seconds + 10);
    double rate = dnum(j, "gbps");
    assert_true(fabs(rate - (double)bytes / seconds / 1e9) <= 1e-9 * rate + 1e-12);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "gbps_phase")->valuestring, "total");
    /* the read phase alone: the file's copy, without verify and evict */
    double copy_s = dnum(j, "copy_read_seconds"), read_rate = dnum(j, "read_gbps");
    assert_true(copy_s > 0 && copy_s <= read_s);
    assert_true(fabs(read_rate - (double)bytes / copy_s / 1e9) <= 1e-9 * read_rate + 1e-12);
    assert_true(dnum(j, "verify_evict_seconds") >= 0);
    assert_true(copy_s + dnum(j, "verify_evict_seconds") <= read_s + 1e-9);
    assert_int_equal(num(j, "mapped_bytes"), 0);
    cJSON *files = cJSON_GetObjectItemCaseSensitive(j, "files");
    assert_int_equal(cJSON_GetArraySize(files), 1);
    cJSON *f = cJSON_GetArrayItem(files, 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(f, "path")->valuestring, path);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(f, "mode")->valuestring, "buffered");
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(num(f, "size"), (uint64_t)sb.st_size);
    assert_int_equal(num(f, "bytes"), bytes);
    double fs = dnum(f, "seconds");
    assert_true(fs > 0 && fs <= seconds);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(f, "phase")->valuestring, "read");
    assert_true(fabs(dnum(f, "gbps") - (double)bytes / fs / 1e9) <= 1e-9 * dnum(f, "gbps") + 1e-12);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(f, "evicted")));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(f, "direct_fallback")));
    assert_int_equal(num(f, "page_cache_after"), 0);
    cJSON *mem = cJSON_GetObjectItemCaseSensitive(j, "memory");
    assert_non_null(mem);
    const char *keys[] = {"rss_anon_start",    "rss_anon_peak",    "rss_anon_end", "rss_file_peak",
                          "page_cache_before", "page_cache_after", "staging_bound"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        num(mem, keys[i]);
    assert_true(num(mem, "rss_anon_peak") >= bytes);
    assert_true(num(mem, "uss_end") >= bytes); /* read after the load: the copy is private */
    assert_true(num(mem, "rss_anon_peak") >= num(mem, "rss_anon_end"));
    assert_true(num(mem, "rss_anon_peak") >= num(mem, "rss_anon_start"));
    assert_int_equal(num(mem, "page_cache_after"), 0);
    assert_int_equal(num(mem, "page_cache_before"), num(f, "page_cache_before"));
    assert_int_equal(num(mem, "staging_bound"), 64u << 20); /* 4 x 16 MiB, the defaults */
    /* verify needs staging; the copy itself goes straight into the destination */
    assert_true(num(mem, "staging_used") <= num(mem, "staging_bound"));
    assert_true(num(mem, "dest_bytes") >= bytes);
    cJSON_Delete(j);
    tu_run_free(&r);
    uint64_t res = 1;
    assert_int_equal(tl_file_page_cache(path, &res, NULL), TL_OK);
    assert_int_equal(res, 0);
}

static void test_human_and_options(void **st) {
    (void)st;
    tu_run r = tu_cli_run("load", "--mode", "mmap", "--verbose", path, NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "mode mmap"));
    /* a view is mapped and populated, not loaded at a speed */
    char mapped[96];
    snprintf(mapped, sizeof mapped, "mapped %llu bytes, populated in ",
             (unsigned long long)((3u << 21) + 2002 + 257 * 8));
    assert_non_null(strstr(r.out, mapped));
    assert_null(strstr(r.out, "GB/s"));
    assert_non_null(strstr(r.out, "rss anon: start"));
    assert_non_null(strstr(r.out, "staging: bound 64.00 MiB"));
    assert_non_null(strstr(r.err, "mmap (asked for"));
    tu_run_free(&r);
    r = tu_cli_run("load", "--json", "--dtype", "F32", "--threads", "3", "--staging", "1M",
                   "--staging-count", "2", "--mode", "direct", path, NULL);
    assert_int_equal(r.status, 0);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_int_equal(num(j, "bytes_out"), (3u << 22) + 4004 + 257 * 8);
    assert_int_equal(num(cJSON_GetObjectItemCaseSensitive(j, "memory"), "staging_bound"), 2u << 20);
    cJSON *f0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "files"), 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(f0, "phase")->valuestring, "read+convert");
    cJSON_Delete(j);
    tu_run_free(&r);
    r = tu_cli_run("load", "--hugepages", "--mode", "buffered", path, NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "GB/s total"));
    tu_run_free(&r);
    r = tu_cli_run("load", "--no-hugepages", "--mode", "buffered", path, NULL);
    assert_int_equal(r.status, 0);
    tu_run_free(&r);
    r = tu_cli_run("load", "--mode", "sideways", path, NULL);
    assert_int_equal(r.status, 2);
    tu_run_free(&r);
    r = tu_cli_run("load", "--dtype", "Q4_K", path, NULL);
    assert_int_equal(r.status, 7); /* unsupported */
    tu_run_free(&r);
    r = tu_cli_run("load", NULL);
    assert_int_equal(r.status, 2);
    tu_run_free(&r);
    r = tu_cli_run("load", "/nonexistent/model.gguf", NULL);
    assert_true(r.status != 0);
    assert_non_null(strstr(r.err, "/nonexistent/model.gguf"));
    tu_run_free(&r);
    r = tu_cli_run("load", "--help", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "--evict"));
    assert_non_null(strstr(r.out, "--hugepages"));
    assert_non_null(strstr(r.out, "bytes delivered / wall seconds of the step named"));
    tu_run_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_human_and_options),
    };
    return tu_exit(cmocka_run_group_tests(tests, setup, teardown));
}
