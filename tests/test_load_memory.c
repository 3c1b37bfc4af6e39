/*
 * test_load_memory.c — the memory bound on a 512 MiB file, measured from
 * /proc (not assumed): peak anonymous RSS during a load stays within the
 * bytes loaded + the staging bound + 16 MiB, and with evict the file leaves
 * the page cache (mincore). One load per mode that copies, to stay fast.
 * With sample_interval < 0 nothing is sampled (the figures are 0).
 */
#include "testutil.h"
#include "test_load_st.h"

#include <string.h>


static void fill(void *buf, uint64_t off, uint64_t len, void *ctx) {
    (void)ctx;
    uint64_t *w = buf;
    for (uint64_t i = 0; i < len / 8; i++)
        w[i] = (off / 8 + i) * 0x9E3779B97F4A7C15ull;
}

static void check_load(const char *path, tl_load_mode mode, bool convert) {
    tl_model *m = NULL;
    const char *p[] = {path};
    assert_int_equal(tl_model_open(p, 1, NULL, &m), TL_OK);
    tl_load_options o;
    tl_load_options_init(&o);
    o.mode = mode;
    o.evict = true;
    o.convert = convert;
    o.dtype = TL_DTYPE_BF16;
    o.sample_interval = 0.002;
    tl_load_result *r = NULL;
    tl_status s = tl_model_load(m, &o, &r);
    if (s != TL_OK) print_error("%s\n", tl_last_error());
    assert_int_equal(s, TL_OK);
    const tl_load_stats *st = tl_load_result_stats(r);
    const tl_load_file *f = tl_load_result_file(r, 0);
    uint64_t bound = st->bytes_out + st->staging_bound + (16u << 20);
#if defined(__SANITIZE_ADDRESS__)
    /* ASan touches one shadow byte per 8 bytes copied, and its own heap is in anon RSS */
    bound += st->bytes_out / 8 + st->mem.start.rss_anon;
#endif
    print_message("%s%s: %llu bytes, anon rss start %llu peak %llu end %llu (bound %llu), "
                  "staging used %llu, page cache %llu -> %llu, %llu samples\n",
                  tl_load_mode_name(f->mode), convert ? "+convert" : "",
                  (unsigned long long)st->bytes, (unsigned long long)st->mem.start.rss_anon,
                  (unsigned long long)st->mem.rss_anon_peak,
                  (unsigned long long)st->mem.end.rss_anon, (unsigned long long)bound,
                  (unsigned long long)st->staging_used, (unsigned long long)f->page_cache_before,
                  (unsigned long long)f->page_cache_after, (unsigned long long)st->mem.samples);
    assert_true(st->bytes >= (512ull << 20));
    assert_true(st->mem.samples >= 2);
    if (!TU_UNDER_TSAN) assert_true(st->mem.rss_anon_peak <= bound);
    /* growth over the load alone: the copies + staging + a little (no 16 MiB process slack) */
    if (!TU_UNDER_TSAN)
        assert_true(st->mem.rss_anon_peak - st->mem.start.rss_anon <= bound - (8u << 20));
    assert_true(st->mem.end.rss_anon >=
                st->mem.start.rss_anon + st->bytes_out / 2); /* the copy is there */
    assert_true(f->evicted);
    uint64_t res = 0, size = 0;
    assert_int_equal(tl_file_page_cache(path, &res, &size), TL_OK);
    assert_true(res <= size / 100);
    tl_load_result_destroy(r);
    tl_model_close(m);
}

static void test_bound_512m(void **st) {
    (void)st;
    char *d = tu_tmpdir();
    char *path = tu_path(d, "big.safetensors");
    st_tensor t[8];
    char names[8][16];
    for (int i = 0; i < 8; i++) {
        snprintf(names[i], sizeof names[i], "w%d", i);
        /* 64 MiB of F16 each: every tensor is larger than a staging buffer */
        t[i] = (st_tensor){names[i], "F16", 32ull << 20, 2, NULL, fill, NULL};
    }
    st_write(path, t, 8);
    check_load(path, TL_LOAD_BUFFERED, false);
    check_load(path, TL_LOAD_DIRECT, true); /* converted: through the staging ring */
    free(path);
    tu_tmpdir_rm(d);
}

/* sample_interval < 0: no sampler, the memory figures stay 0; the default samples. */
static void test_no_sampling(void **st) {
    (void)st;
    char *d = tu_tmpdir();
    char *path = tu_path(d, "small.safetensors");
    st_tensor t = {"w", "F16", 1u << 20, 2, NULL, fill, NULL};
    st_write(path, &t, 1);
    tl_model *m = NULL;
    const char *p[] = {path};
    assert_int_equal(tl_model_open(p, 1, NULL, &m), TL_OK);
    for (int off = 0; off < 2; off++) {
        tl_load_options o;
        tl_load_options_init(&o);
        o.mode = TL_LOAD_BUFFERED;
        o.sample_interval = off ? -1 : 0;
        tl_load_result *r = NULL;
        assert_int_equal(tl_model_load(m, &o, &r), TL_OK);
        const tl_load_stats *s = tl_load_result_stats(r);
        assert_int_equal(s->bytes, 2u << 20);
        if (off) {
            assert_int_equal(s->mem.samples, 0);
            assert_int_equal(s->mem.rss_peak, 0);
            assert_int_equal(s->mem.start.rss, 0);
            assert_int_equal(s->mem.end.rss, 0);
        } else {
            assert_true(s->mem.samples >= 2);
            assert_true(s->mem.rss_peak >= s->mem.start.rss && s->mem.start.rss > 0);
        }
        tl_load_result_destroy(r);
    }
    tl_model_close(m);
    free(path);
    tu_tmpdir_rm(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_sampling),
        cmocka_unit_test(test_bound_512m),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
