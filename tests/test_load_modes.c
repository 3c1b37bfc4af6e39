/*
 * test_load_modes.c — tl_model_load in every mode (mmap, buffered, direct,
 * auto) and with every conversion target: loaded bytes equal the file's, or
 * the exact converted values; chunking through a small staging ring; views;
 * O_DIRECT refused (injected EINVAL; tmpfs accepts it since Linux 6.6) falls back to buffered with
 * a note; --evict leaves the file out of the page cache (mincore); --verify passes on copies and
 * names the tensor when memory differs from the file; cancelling from the progress callback; bad
 * options.
 */
#include "testutil.h"
#include "io/convert.h"
#include "os/fault.h"

#include <errno.h>
#include "test_load_st.h"
#include "ref_convert.h"

#include <math.h>
#include <string.h>

#define N_T 9

typedef struct fixture {
    char *dir;
    char *path;
    unsigned char *bytes[N_T];
    st_tensor t[N_T];
} fixture;

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Random bytes, with special values sprinkled in for the float types. */
static unsigned char *make(const char *dtype, uint64_t n, unsigned es) {
    unsigned char *b = malloc(n * es + 1);
    for (uint64_t i = 0; i < n * es; i++)
        b[i] = (unsigned char)next_rand();
    if (!strcmp(dtype, "I64")) { /* keep values in I32 range */
        for (uint64_t i = 0; i < n; i++) {
            int64_t v = (int64_t)(int32_t)next_rand();
            memcpy(b + i * 8, &v, 8);
        }
    }
    if (!strcmp(dtype, "F16") && n > 8) {
        uint16_t sp[] = {0x7c00, 0xfc00, 0x7e00, 0x7c01, 0x0001, 0x8001, 0x03ff, 0x0000, 0x8000};
        memcpy(b, sp, sizeof sp);
    }
    if (!strcmp(dtype, "F32") && n > 6) {
        uint32_t sp[] = {0x7f800000, 0xff800000, 0x7fc00000, 0x00000001, 0x477ff000, 0x33000000};
        memcpy(b, sp, sizeof sp);
    }
    return b;
}

static int setup_dir(fixture *fx, const char *dir) {
    static const struct {
        const char *name, *dtype;
        uint64_t n;
        unsigned es;
        tl_dtype t;
    } spec[N_T] = {
        {"a.f16", "F16", 100003, 2, TL_DTYPE_F16}, /* > staging: chunked */
        {"b.u8", "U8", 4097, 1, TL_DTYPE_U8},      /* odd size: next offsets unaligned */
        {"c.bf16", "BF16", 70001, 2, TL_DTYPE_BF16},
        {"d.f32", "F32", 50001, 4, TL_DTYPE_F32},
        {"e.f8e4m3", "F8_E4M3", 65537, 1, TL_DTYPE_F8_E4M3},
        {"f.f8e5m2", "F8_E5M2", 3001, 1, TL_DTYPE_F8_E5M2},
        {"g.f64", "F64", 20001, 8, TL_DTYPE_F64},
        {"h.i64", "I64", 9999, 8, TL_DTYPE_I64},
        {"i.empty", "F16", 0, 2, TL_DTYPE_F16},
    };
    memset(fx, 0, sizeof *fx);
    fx->dir = strdup(dir);
    fx->path = tu_path(dir, "m.safetensors");
    for (int i = 0; i < N_T; i++) {
        fx->bytes[i] = make(spec[i].dtype, spec[i].n, spec[i].es);
        fx->t[i] = (st_tensor){spec[i].name, spec[i].dtype, spec[i].n, spec[i].es,
                               fx->bytes[i], NULL,          NULL};
    }
    st_write(fx->path, fx->t, N_T);
    return 0;
}

static int setup(void **state) {
    fixture *fx = malloc(sizeof *fx);
    char *d = tu_tmpdir();
    setup_dir(fx, d);
    free(d);
    *state = fx;
    return 0;
}

static int teardown(void **state) {
    fixture *fx = *state;
    for (int i = 0; i < N_T; i++)
        free(fx->bytes[i]);
    free(fx->path);
    tu_tmpdir_rm(fx->dir);
    free(fx);
    return 0;
}

static tl_model *open_model(const char *path) {
    tl_model *m = NULL;
    const char *p[] = {path};
    tl_status s = tl_model_open(p, 1, NULL, &m);
    if (s != TL_OK) print_error("open: %s\n", tl_last_error());
    assert_int_equal(s, TL_OK);
    return m;
}

/* Check every loaded tensor: equal bytes, or the exact conversion of the file's bytes. */
static void check_result(fixture *fx, tl_model *m, const tl_load_result *r,
                         const tl_load_options *o) {
    assert_int_equal(tl_load_result_tensor_count(r), N_T);
    for (int i = 0; i < N_T; i++) {
        size_t idx = tl_model_find(m, fx->t[i].name);
        assert_true(idx != TL_NOT_FOUND);
        const tl_tensor_info *ti = tl_model_tensor(m, (size_t)idx);
        const tl_loaded_tensor *lt = tl_load_result_tensor(r, (size_t)idx);
        assert_non_null(lt);
        tl_dtype want = o->convert ? tl_convert_target(ti, o->dtype) : ti->dtype;
        assert_int_equal(lt->dtype, want);
        assert_int_equal(lt->converted, want != ti->dtype);
        if (want == ti->dtype) {
            assert_int_equal(lt->nbytes, ti->nbytes);
            if (ti->nbytes) assert_memory_equal(lt->data, fx->bytes[i], ti->nbytes);
        } else {
            uint64_t out = ti->n_elements * tl__convert_elem_size(want);
            assert_int_equal(lt->nbytes, out);
            assert_false(lt->view);
            ref_check_converted(want, lt->data, ti->dtype, fx->bytes[i], ti->n_elements,
                                fx->t[i].name);
        }
    }
}

static tl_load_result *load(tl_model *m, const tl_load_options *o) {
    tl_load_result *r = NULL;
    tl_status s = tl_model_load(m, o, &r);
    if (s != TL_OK) print_error("load: %s\n", tl_last_error());
    assert_int_equal(s, TL_OK);
    assert_non_null(r);
    return r;
}

static void test_every_mode_and_conversion(void **state) {
    fixture *fx = *state;
    tl_model *m = open_model(fx->path);
    const tl_load_mode modes[] = {TL_LOAD_MMAP, TL_LOAD_BUFFERED, TL_LOAD_DIRECT, TL_LOAD_AUTO};
    const tl_dtype targets[] = {TL_DTYPE_INVALID, TL_DTYPE_F32, TL_DTYPE_F16, TL_DTYPE_BF16,
                                TL_DTYPE_I32};
    for (size_t mi = 0; mi < 4; mi++) {
        for (size_t ti = 0; ti < 5; ti++) {
            for (int views = 0; views < 2; views++) {
                tl_load_options o;
                tl_load_options_init(&o);
                o.mode = modes[mi];
                o.convert = targets[ti] != TL_DTYPE_INVALID;
                o.dtype = targets[ti];
                o.staging_size = 64 << 10; /* small: tensors go through in several chunks */
                o.staging_count = 3;
                o.threads = 3;
                o.accept_views = views;
                o.populate = views;
                o.verify = (ti + mi) % 2 == 0;
                tl_load_result *r = load(m, &o);
                check_result(fx, m, r, &o);
                const tl_load_file *f = tl_load_result_file(r, 0);
                assert_non_null(f);
                assert_true(f->mode != TL_LOAD_AUTO);
                if (o.mode != TL_LOAD_AUTO) assert_int_equal(f->mode, o.mode);
                assert_non_null(f->reason);
                const tl_load_stats *st = tl_load_result_stats(r);
                assert_int_equal(st->staging_bound, 3 * (64 << 10));
                assert_true(st->staging_used <= st->staging_bound);
                assert_true(st->bytes > 0);
                assert_int_equal(st->bytes, f->bytes);
                if (f->mode == TL_LOAD_MMAP && !o.convert) {
                    assert_true(tl_load_result_tensor(r, 0)->view);
                    assert_int_equal(st->dest_bytes, 0);
                }
                tl_load_result_destroy(r);
            }
        }
    }
    tl_model_close(m);
}

static void test_auto_warm_views(void **state) {
    fixture *fx = *state;
    tl_model *m = open_model(fx->path);
    tl_load_options o;
    tl_load_options_init(&o);
    o.mode = TL_LOAD_BUFFERED;
    tl_load_result *r = load(m, &o); /* makes the file warm */
    tl_load_result_destroy(r);
    o.mode = TL_LOAD_AUTO;
    o.accept_views = true;
    r = load(m, &o);
    assert_int_equal(tl_load_result_file(r, 0)->mode, TL_LOAD_MMAP);
    assert_non_null(strstr(tl_load_result_file(r, 0)->reason, "warm"));
    assert_non_null(strstr(tl_load_result_notes(r), "mmap"));
    check_result(fx, m, r, &o);
    tl_load_result_destroy(r);
    o.accept_views = false;
    r = load(m, &o);
    assert_int_equal(tl_load_result_file(r, 0)->mode, TL_LOAD_BUFFERED);
    tl_load_result_destroy(r);
    tl_model_close(m);
}

static void test_evict(void **state) {
    fixture *fx = *state;
    tl_model *m = open_model(fx->path);
    tl_load_options o;
    tl_load_options_init(&o);
    o.mode = TL_LOAD_BUFFERED;
    o.evict = true;
    o.verify = true;
    tl_load_result *r = load(m, &o);
    check_result(fx, m, r, &o);
    const tl_load_file *f = tl_load_result_file(r, 0);
    assert_true(f->evicted);
    assert_true(f->page_cache_before > 0);
    uint64_t res = 1, size = 0;
    assert_int_equal(tl_file_page_cache(fx->path, &res, &size), TL_OK);
    assert_true(size > 0);
    assert_int_equal(res, 0); /* mincore: not resident */
    assert_int_equal(f->page_cache_after, 0);
    tl_load_result_destroy(r);
    /* cold now: auto takes the cold path (direct here: ext4 / xfs / btrfs take O_DIRECT) */
    o.mode = TL_LOAD_AUTO;
    o.evict = false;
    r = load(m, &o);
    assert_non_null(strstr(tl_load_result_file(r, 0)->reason, "cold"));
    check_result(fx, m, r, &o);
    tl_load_result_destroy(r);
    tl_model_close(m);
}

static void test_direct_refused_tmpfs(void **state) {
    (void)state;
    if (access("/dev/shm", W_OK) != 0)
        TU_SKIP("/dev/shm is not writable here (needed for a tmpfs model)");
    char tmpl[] = "/dev/shm/tltest.XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    fixture fx;
    setup_dir(&fx, d);
    tl_model *m = open_model(fx.path);
    tl_load_options o;
    tl_load_options_init(&o);
    o.mode = TL_LOAD_DIRECT;
    /* kernels >= 6.6 accept O_DIRECT on tmpfs: whichever way, the bytes are right */
    tl_load_result *r = load(m, &o);
    check_result(&fx, m, r, &o);
    tl_load_result_destroy(r);
    /* refusal (EINVAL, as older tmpfs and some FUSE filesystems answer) falls back */
    tl__fault_arm(TL_FAULT_OPEN, 1, EINVAL);
    r = load(m, &o);
    tl__fault_reset();
    const tl_load_file *f = tl_load_result_file(r, 0);
    assert_true(f->direct_fallback);
    assert_int_equal(f->mode, TL_LOAD_BUFFERED);
    assert_non_null(strstr(tl_load_result_notes(r), "O_DIRECT refused"));
    check_result(&fx, m, r, &o);
    tl_load_result_destroy(r);
    o.convert = true;
    o.dtype = TL_DTYPE_F32;
    tl__fault_arm(TL_FAULT_OPEN, 1, EINVAL);
    r = load(m, &o);
    tl__fault_reset();
    assert_true(tl_load_result_file(r, 0)->direct_fallback);
    check_result(&fx, m, r, &o);
    tl_load_result_destroy(r);
    tl_model_close(m);
    for (int i = 0; i < N_T; i++)
        free(fx.bytes[i]);
    free(fx.path);
    tu_tmpdir_rm(fx.dir);
}

static void test_verify_mismatch(void **state) {
    fixture *fx = *state;
    /* a writable (copy-on-write) model patched in memory: every mode delivers and verifies
       the patched bytes, never the file's */
    tl_model *m = NULL;
    const char *p[] = {fx->path};
    tl_model_options mo;
    tl_model_options_init(&mo);
    mo.writable = true;
    assert_int_equal(tl_model_open(p, 1, &mo, &m), TL_OK);
    size_t idx = tl_model_find(m, "d.f32");
    assert_true(idx != TL_NOT_FOUND);
    unsigned char *w = tl_model_tensor_data_mut(m, (size_t)idx);
    assert_non_null(w);
    w[17] ^= 0x40;
    tl_load_options o;
    tl_load_options_init(&o);
    o.mode = TL_LOAD_MMAP;
    o.verify = true;
    const tl_load_mode modes[] = {TL_LOAD_MMAP, TL_LOAD_BUFFERED, TL_LOAD_DIRECT, TL_LOAD_AUTO};
    for (int i = 0; i < 4; i++) {
        o.mode = modes[i];
        tl_load_result *r = load(m, &o);
        const tl_loaded_tensor *lt = tl_load_result_tensor(r, (size_t)idx);
        assert_memory_equal(lt->data, w, lt->nbytes);
        tl_load_result_destroy(r);
    }
    tl_model_close(m);
}

/* Does the last error name one of the fixture's tensors and its file? */
static void error_names_tensor_and_file(fixture *fx) {
    const char *e = tl_last_error();
    assert_non_null(strstr(e, fx->path));
    for (int i = 0; i < N_T; i++)
        if (strstr(e, fx->t[i].name)) return;
    fail_msg("the verify error names no tensor: %s", e);
}

/*
 * Copies that differ from the file fail --verify in buffered, direct and auto
 * (warm and cold) modes, converted or not: every read the load makes is in
 * turn returned inverted (TL_FAULT_CORRUPT), and each time the load must fail
 * with TL_ERR_INTEGRITY naming the file and a tensor.
 */
static void test_verify_mismatch_copies(void **state) {
    fixture *fx = *state;
    tl_model *m = open_model(fx->path);
    const tl_load_mode modes[] = {TL_LOAD_BUFFERED, TL_LOAD_DIRECT, TL_LOAD_AUTO, TL_LOAD_AUTO};
    for (size_t mi = 0; mi < 4; mi++) {
        for (int conv = 0; conv < 2; conv++) {
            tl_load_options o;
            tl_load_options_init(&o);
            o.mode = modes[mi];
            o.convert = conv;
            o.dtype = TL_DTYPE_F32;
            o.staging_size = 64 << 10;
            o.staging_count = 3;
            o.threads = 3;
            if (mi == 3) tl_file_evict(fx->path); /* auto on a cold file */
            /* the reads of the load itself (verify's own reads come after them) */
            tl__fault_arm(TL_FAULT_CORRUPT, 0, 0);
            tl_load_result *r = load(m, &o);
            unsigned long calls = tl__fault_calls(TL_FAULT_CORRUPT);
            bool any_converted = false;
            for (size_t i = 0; i < tl_load_result_tensor_count(r); i++)
                any_converted |= tl_load_result_tensor(r, i)->converted;
            assert_int_equal(any_converted, conv);
            tl_load_result_destroy(r);
            tl__fault_reset();
            assert_true(calls > 0);
            o.verify = true;
            for (unsigned long nth = 1; nth <= calls; nth++) {
                if (mi == 3) tl_file_evict(fx->path);
                tl__fault_arm(TL_FAULT_CORRUPT, nth, 1);
                r = (tl_load_result *)1;
                tl_status st = tl_model_load(m, &o, &r);
                tl__fault_reset();
                if (st != TL_ERR_INTEGRITY)
                    fail_msg("mode %zu convert %d: read %lu of %lu inverted: %s (%s)", mi, conv,
                             nth, calls, tl_status_name(st), st ? tl_last_error() : "load passed");
                assert_null(r);
                error_names_tensor_and_file(fx);
            }
        }
    }
    tl_model_close(m);
}

/*
 * mmap mode reads nothing but verify's own reads of the file: when one of
 * those comes back different (TL_FAULT_CORRUPT inverts it), the views and the
 * values converted from the mapping both fail --verify naming file and
 * tensor. A patched tensor, by contrast, verifies against its patched bytes
 * (tests/test_load_patched.c).
 */
static void test_verify_mismatch_mmap_converted(void **state) {
    fixture *fx = *state;
    tl_model *m = open_model(fx->path);
    for (int conv = 0; conv < 2; conv++) {
        tl_load_options o;
        tl_load_options_init(&o);
        o.mode = TL_LOAD_MMAP;
        o.convert = conv;
        o.dtype = TL_DTYPE_F32;
        o.verify = true;
        tl__fault_arm(TL_FAULT_CORRUPT, 0, 0);
        tl_load_result *r = load(m, &o);
        unsigned long calls = tl__fault_calls(TL_FAULT_CORRUPT);
        tl_load_result_destroy(r);
        tl__fault_reset();
        assert_true(calls > 0);
        for (unsigned long nth = 1; nth <= calls; nth++) {
            tl__fault_arm(TL_FAULT_CORRUPT, nth, 1);
            r = (tl_load_result *)1;
            tl_status st = tl_model_load(m, &o, &r);
            tl__fault_reset();
            if (st != TL_ERR_INTEGRITY)
                fail_msg("convert %d: verify read %lu of %lu inverted: %s (%s)", conv, nth, calls,
                         tl_status_name(st), st ? tl_last_error() : "load passed");
            assert_null(r);
            error_names_tensor_and_file(fx);
        }
    }
    tl_model_close(m);
}

static void test_two_files_auto(void **state) {
    fixture *fx = *state;
    /* a second file: warm (just written and read) while the first is evicted */
    char *p2 = tu_path(fx->dir, "n.safetensors");
    unsigned char data[3000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (unsigned char)(i * 7);
    st_tensor t = {"z.u8", "U8", sizeof data, 1, data, NULL, NULL};
    st_write(p2, &t, 1);
    uint64_t res, size;
    assert_int_equal(tl_file_page_cache(p2, &res, &size), TL_OK);
    if (res < size / 2) { /* make sure it is warm */
        size_t n;
        free(tu_read_file(p2, &n));
    }
    const char *paths[] = {fx->path, p2};
    tl_model *m = NULL;
    assert_int_equal(tl_model_open(paths, 2, NULL, &m), TL_OK);
    /* after the open: its header reads bring read-ahead pages in */
    assert_int_equal(tl_file_evict(fx->path), TL_OK);
    tl_load_options o;
    tl_load_options_init(&o);
    o.accept_views = true;
    tl_load_result *r = load(m, &o);
    assert_int_equal(tl_load_result_file_count(r), 2);
    const tl_load_file *a = tl_load_result_file(r, 0), *b = tl_load_result_file(r, 1);
    print_message("%s: %s (%s)\n%s: %s (%s)\n", a->path, tl_load_mode_name(a->mode), a->reason,
                  b->path, tl_load_mode_name(b->mode), b->reason);
    assert_non_null(strstr(a->reason, "cold"));
    assert_true(a->mode == TL_LOAD_DIRECT || a->mode == TL_LOAD_BUFFERED);
    assert_int_equal(b->mode, TL_LOAD_MMAP);
    assert_non_null(strstr(b->reason, "warm"));
    size_t zi = tl_model_find(m, "z.u8");
    assert_true(zi != TL_NOT_FOUND);
    const tl_loaded_tensor *z = tl_load_result_tensor(r, (size_t)zi);
    assert_true(z->view);
    assert_memory_equal(z->data, data, sizeof data);
    const tl_load_stats *st = tl_load_result_stats(r);
    assert_int_equal(st->bytes, a->bytes + b->bytes);
    assert_int_equal(st->page_cache_before, a->page_cache_before + b->page_cache_before);
    tl_load_result_destroy(r);
    tl_model_close(m);
    free(p2);
}

static void test_truncated_file(void **state) {
    fixture *fx = *state;
    tl_model *m = open_model(fx->path);
    uint64_t size;
    uint64_t res;
    assert_int_equal(tl_file_page_cache(fx->path, &res, &size), TL_OK);
    assert_int_equal(truncate(fx->path, (off_t)(size / 2)), 0);
    const tl_load_mode modes[] = {TL_LOAD_BUFFERED, TL_LOAD_DIRECT};
    for (int i = 0; i < 2; i++) {
        for (int conv = 0; conv < 2; conv++) {
            tl_load_options o;
            tl_load_options_init(&o);
            o.mode = modes[i];
            o.convert = conv;
            o.dtype = TL_DTYPE_F32;
            tl_load_result *r = (tl_load_result *)1;
            tl_status s = tl_model_load(m, &o, &r);
            assert_int_equal(s, TL_ERR_CHANGED);
            assert_null(r);
            assert_non_null(strstr(tl_last_error(), "truncated"));
            assert_non_null(strstr(tl_last_error(), fx->path));
            assert_non_null(strstr(tl_last_error(), "tensor "));
        }
    }
    tl_model_close(m);
}

static bool cancel_cb(void *user, uint64_t done, uint64_t total) {
    int *calls = user;
    (*calls)++;
    assert_true(done <= total);
    return false;
}

static void test_cancel_and_bad_options(void **state) {
    fixture *fx = *state;
    tl_model *m = open_model(fx->path);
    tl_load_options o;
    tl_load_options_init(&o);
    int calls = 0;
    o.mode = TL_LOAD_BUFFERED;
    o.progress = cancel_cb;
    o.progress_user = &calls;
    tl_load_result *r = (tl_load_result *)1;
    assert_int_equal(tl_model_load(m, &o, &r), TL_ERR_CANCELLED);
    assert_null(r);
    assert_true(calls >= 1);
    tl_load_options_init(&o);
    o.convert = true;
    o.dtype = TL_DTYPE_Q4_K;
    assert_int_equal(tl_model_load(m, &o, &r), TL_ERR_UNSUPPORTED);
    o.convert = false;
    o.mode = (tl_load_mode)42;
    assert_int_equal(tl_model_load(m, &o, &r), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_load_mode_from_name("direct"), TL_LOAD_DIRECT);
    assert_int_equal(tl_load_mode_from_name("nope"), -1);
    assert_string_equal(tl_load_mode_name(TL_LOAD_MMAP), "mmap");
    /* NULL options: defaults */
    r = load(m, NULL);
    assert_int_equal(tl_load_result_stats(r)->staging_bound,
                     TL_LOAD_DEFAULT_STAGING_COUNT * TL_LOAD_DEFAULT_STAGING_SIZE);
    assert_int_equal(tl_load_result_stats(r)->threads, TL_LOAD_DEFAULT_THREADS);
    assert_null(tl_load_result_tensor(r, 1000));
    assert_null(tl_load_result_file(r, 7));
    tl_load_result_destroy(r);
    tl_load_result_destroy(NULL);
    tl_model_close(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_mode_and_conversion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auto_warm_views, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evict, setup, teardown),
        cmocka_unit_test(test_direct_refused_tmpfs),
        cmocka_unit_test_setup_teardown(test_truncated_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_files_auto, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_mismatch_copies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_mismatch_mmap_converted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_and_bad_options, setup, teardown),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
