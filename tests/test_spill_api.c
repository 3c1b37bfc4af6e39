/*
 * test_spill_api.c — the spill buffers the Python binding offloads tensors
 * into: bytes written chunk by chunk come back through the mapping, nothing
 * is left in the spill folder (the file never had a name), writes past the
 * end are refused, and a full disk (ENOSPC on the N-th write, injected) is an
 * error that leaves no descriptor behind.
 */
#include "testutil.h"

#include "os/fault.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_roundtrip(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    enum { N = (3 << 20) + 123 };
    unsigned char *src = malloc(N);
    for (size_t i = 0; i < N; i++)
        src[i] = (unsigned char)(i * 131 + 7);
    tl_spill_options o;
    tl_spill_options_init(&o);
    o.dir = dir;
    o.chunk_size = 1 << 20;
    int fds = tu_count_fds();
    tl_spill *s;
    assert_int_equal(tl_spill_create(N, &o, &s), TL_OK);
    assert_int_equal(tl_spill_size(s), N);
    assert_int_equal(tl_spill_write(s, 0, src, 1000), TL_OK);
    assert_int_equal(tl_spill_write(s, 1000, src + 1000, N - 1000), TL_OK);
    assert_int_equal(tl_spill_write(s, N - 10, src, 11), TL_ERR_INVALID_ARG); /* past the end */
    assert_int_equal(entries(dir), 0);                                        /* no name, ever */
    void *p;
    assert_int_equal(tl_spill_map(s, &p), TL_OK);
    assert_memory_equal(p, src, N);
    tl_spill_destroy(s);
    assert_int_equal(tu_count_fds(), fds);
    /* a full disk on each write in turn: an error naming why, nothing left */
    tl__fault_arm(TL_FAULT_WRITE, 0, 0);
    assert_int_equal(tl_spill_create(N, &o, &s), TL_OK);
    assert_int_equal(tl_spill_write(s, 0, src, N), TL_OK);
    tl_spill_destroy(s);
    unsigned long calls = tl__fault_calls(TL_FAULT_WRITE);
    assert_true(calls >= 4);
    for (unsigned long nth = 1; nth <= calls; nth++) {
        assert_int_equal(tl_spill_create(N, &o, &s), TL_OK);
        tl__fault_arm(TL_FAULT_WRITE, nth, ENOSPC);
        tl_status st = tl_spill_write(s, 0, src, N);
        tl__fault_reset();
        assert_int_equal(st, TL_ERR_IO);
        assert_non_null(strstr(tl_last_error(), "No space"));
        tl_spill_destroy(s);
        assert_int_equal(tu_count_fds(), fds);
    }
    assert_int_equal(entries(dir), 0);
    free(src);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_roundtrip)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
