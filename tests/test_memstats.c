/*
 * test_memstats.c — tl_memstats_read reports this process's RSS (anon and
 * file), USS, peak and the machine's MemAvailable; the sampler sees an
 * allocation's peak after it is gone (and leaves USS, a page-table walk, to
 * tl_memstats_read); page-cache residency by path agrees with the test's own
 * mincore count, whole, evicted and partly read back.
 */
#include "testutil.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void test_read(void **st) {
    (void)st;
    tl_memstats m;
    assert_int_equal(tl_memstats_read(&m, sizeof m), TL_OK);
    assert_true(m.rss > 0);
    assert_true(m.rss_anon > 0);
    assert_true(m.rss_file > 0); /* the program's own text */
    assert_true(m.rss >= m.rss_anon);
    assert_true(m.peak_rss >= m.rss);
    assert_true(m.uss > 0 && m.uss <= m.rss + (1 << 20));
    assert_true(m.mem_total > 0);
    assert_true(m.mem_available > 0 && m.mem_available <= m.mem_total);
    if (m.has_cgroup)
        assert_true(m.cgroup_max > 0);
    else
        assert_true(m.cgroup_max == UINT64_MAX);
    assert_int_equal(tl_memstats_read(NULL, 0), TL_ERR_INVALID_ARG);
}

static void test_watch_peak(void **st) {
    (void)st;
    tl_memwatch *w = NULL;
    assert_int_equal(tl_memwatch_create(0.001, &w), TL_OK);
    size_t n = 64u << 20;
    char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    memset(p, 1, n);
    tl_memstats mid;
    assert_int_equal(tl_memstats_read(&mid, sizeof mid), TL_OK);
    tl_memwatch_sample(w);
    munmap(p, n);
    tl_memspan span;
    tl_memwatch_destroy(w, &span, sizeof span);
    assert_true(span.samples >= 2);
    assert_true(span.rss_anon_peak >= span.start.rss_anon + (60u << 20));
    assert_true(span.rss_anon_peak >= mid.rss_anon);
    assert_true(span.end.rss_anon + (32u << 20) < span.rss_anon_peak);
    assert_true(span.rss_peak >= span.rss_anon_peak);
    assert_true(span.start.uss > 0);
    assert_int_equal(span.end.uss, 0);
    tl_memwatch_destroy(NULL, NULL, 0);
}

static void test_page_cache(void **st) {
    (void)st;
    char *d = tu_tmpdir();
    char *path = tu_path(d, "f.bin");
    size_t n = 8u << 20;
    char *buf = malloc(n);
    memset(buf, 7, n);
    FILE *f = fopen(path, "wb");
    assert_int_equal(fwrite(buf, 1, n, f), n);
    fflush(f);
    fsync(fileno(f));
    fclose(f);
    free(buf);
    uint64_t res = 0, size = 0;
    assert_int_equal(tl_file_page_cache(path, &res, &size), TL_OK);
    assert_int_equal(size, n);
    assert_int_equal(res, tu_file_cached_bytes(path));
    assert_int_equal(tl_file_evict(path), TL_OK);
    assert_int_equal(tl_file_page_cache(path, &res, NULL), TL_OK);
    assert_true(res <= n / 100);
    assert_int_equal(res, tu_file_cached_bytes(path));
    /* read 3 MiB from the middle back (readahead may add some): the same count both ways */
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    char *part = malloc(3u << 20);
    assert_int_equal(pread(fd, part, 3u << 20, 2u << 20), 3u << 20);
    free(part);
    close(fd);
    assert_int_equal(tl_file_page_cache(path, &res, NULL), TL_OK);
    assert_true(res >= (3u << 20) && res <= n);
    assert_int_equal(res, tu_file_cached_bytes(path));
    assert_int_equal(tl_file_page_cache("/nonexistent/x", &res, NULL), TL_ERR_NOT_FOUND);
    assert_non_null(strstr(tl_last_error(), "/nonexistent/x"));
    free(path);
    tu_tmpdir_rm(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read),
        cmocka_unit_test(test_watch_peak),
        cmocka_unit_test(test_page_cache),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
