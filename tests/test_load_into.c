/*
 * test_load_into.c — loading a subset of a model into memory the caller
 * provides: only the asked tensors are read, each lands at the address the
 * destination callback gave (no copy owned by the result), conversion and
 * verify work as for a normal load, and bad requests are clear errors; memory
 * declared fresh (dest_fresh) gets the page-size advice the loader's own
 * destinations get, and whole pages between destinations are never touched.
 * Expected bytes are the file's, read by the test itself.
 */
#include "testutil.h"

#include "test_load_st.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void fill(void *buf, uint64_t off, uint64_t len, void *ctx) {
    for (uint64_t i = 0; i < len; i++)
        ((unsigned char *)buf)[i] = (unsigned char)((off + i) * 5 + (uintptr_t)ctx);
}

typedef struct arena {
    unsigned char *base;
    size_t used, cap;
    int calls;
} arena;

static void *take(void *user, size_t tensor, uint64_t nbytes, tl_dtype dtype) {
    (void)tensor;
    (void)dtype;
    arena *a = user;
    a->calls++;
    size_t at = (a->used + 255) & ~(size_t)255; /* the engine's own alignment, not ours */
    if (at + nbytes > a->cap) return NULL;
    a->used = at + nbytes;
    return a->base + at;
}

static void test_subset_into_caller_memory(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *p = tu_path(dir, "m.safetensors");
    st_tensor t[] = {{"a", "F32", 70001, 4, NULL, fill, (void *)1},
                     {"b", "F16", 5003, 2, NULL, fill, (void *)2},
                     {"c", "U8", 999, 1, NULL, fill, (void *)3}};
    st_write(p, t, 3);
    size_t fsz;
    unsigned char *file = (unsigned char *)tu_read_file(p, &fsz);
    const char *paths[] = {p};
    tl_model *m;
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    size_t ia = (size_t)tl_model_find(m, "a"), ic = (size_t)tl_model_find(m, "c");
    const tl_load_mode modes[] = {TL_LOAD_MMAP, TL_LOAD_BUFFERED, TL_LOAD_DIRECT};
    for (int mi = 0; mi < 3; mi++) {
        arena ar = {malloc(1 << 20), 0, 1 << 20, 0};
        size_t want[] = {ic, ia, ic}; /* a duplicate is loaded once */
        tl_load_options o;
        tl_load_options_init(&o);
        o.mode = modes[mi];
        o.verify = true;
        o.tensors = want;
        o.n_tensors = 3;
        o.dest = take;
        o.dest_user = &ar;
        tl_load_result *r;
        if (tl_model_load(m, &o, &r)) fail_msg("mode %d: %s", mi, tl_last_error());
        assert_int_equal(ar.calls, 2);
        const tl_loaded_tensor *la = tl_load_result_tensor(r, ia),
                               *lc = tl_load_result_tensor(r, ic);
        assert_true((const unsigned char *)la->data >= ar.base &&
                    (const unsigned char *)la->data < ar.base + ar.cap);
        assert_false(la->view);
        assert_memory_equal(la->data, file + tl_model_tensor(m, ia)->offset, 70001 * 4);
        assert_memory_equal(lc->data, file + tl_model_tensor(m, ic)->offset, 999);
        assert_null(tl_load_result_tensor(r, (size_t)tl_model_find(m, "b"))->data);
        tl_load_result_destroy(r);
        free(ar.base);
    }
    /* converted into caller memory: F32 a as F16 needs 2 bytes an element */
    arena ar = {malloc(1 << 20), 0, 1 << 20, 0};
    tl_load_options o;
    tl_load_options_init(&o);
    o.mode = TL_LOAD_BUFFERED;
    o.convert = true;
    o.dtype = TL_DTYPE_F16;
    o.verify = true;
    o.tensors = &ia;
    o.n_tensors = 1;
    o.dest = take;
    o.dest_user = &ar;
    tl_load_result *r;
    assert_int_equal(tl_model_load(m, &o, &r), TL_OK);
    assert_int_equal(tl_load_result_tensor(r, ia)->nbytes, 70001 * 2);
    assert_int_equal(ar.used, 70001 * 2);
    tl_load_result_destroy(r);
    /* a callback with no memory, an index out of range */
    ar.used = ar.cap;
    r = (tl_load_result *)1;
    assert_int_equal(tl_model_load(m, &o, &r), TL_ERR_INVALID_ARG);
    assert_null(r);
    assert_non_null(strstr(tl_last_error(), "destination"));
    size_t bad = 99;
    o.tensors = &bad;
    assert_int_equal(tl_model_load(m, &o, &r), TL_ERR_INVALID_ARG);
    free(ar.base);
    tl_model_close(m);
    free(file);
    free(p);
    tu_tmpdir_rm(dir);
}

typedef struct fresh {
    unsigned char *at;
} fresh;

static void *fresh_dest(void *user, size_t tensor, uint64_t nbytes, tl_dtype dtype) {
    (void)tensor;
    (void)nbytes;
    (void)dtype;
    return ((fresh *)user)->at;
}

/* dest_fresh: the caller's untouched memory is advised like the loader's own destinations. */
static void test_fresh_caller_memory(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *p = tu_path(dir, "m.safetensors");
    const uint64_t n = 6u << 20; /* bytes: whole 2 MiB pages inside */
    st_tensor t[] = {{"w", "U8", n, 1, NULL, fill, (void *)7}};
    st_write(p, t, 1);
    size_t fsz;
    unsigned char *file = (unsigned char *)tu_read_file(p, &fsz);
    const char *paths[] = {p};
    tl_model *m;
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    size_t iw = tl_model_find(m, "w");
    /* hugepages, no_hugepages, and not fresh: "hg", "nh", neither */
    for (int k = 0; k < 3; k++) {
        size_t len = 12u << 20;
        unsigned char *raw =
            mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        assert_true(raw != MAP_FAILED);
        fresh f = {raw + 4096 + 64}; /* not aligned, as a malloc'd buffer is not */
        tl_load_options o;
        tl_load_options_init(&o);
        o.mode = TL_LOAD_BUFFERED;
        o.tensors = &iw;
        o.n_tensors = 1;
        o.dest = fresh_dest;
        o.dest_user = &f;
        o.dest_fresh = k < 2;
        o.hugepages = k == 0;
        o.no_hugepages = k == 1;
        tl_load_result *r;
        if (tl_model_load(m, &o, &r)) fail_msg("%s", tl_last_error());
        assert_memory_equal(f.at, file + tl_model_tensor(m, iw)->offset, n);
        char flags[256];
        unsigned char *inside =
            (unsigned char *)(((uintptr_t)f.at + (4u << 20)) & ~(uintptr_t)((2u << 20) - 1));
        assert_true(tu_vm_flags(inside, flags, sizeof flags));
        assert_int_equal(tu_has_vm_flag(flags, "hg"), k == 0);
        assert_int_equal(tu_has_vm_flag(flags, "nh"), k == 1);
        tl_load_result_destroy(r);
        munmap(raw, len);
    }
    tl_model_close(m);
    free(file);
    free(p);
    tu_tmpdir_rm(dir);
}

typedef struct two_at {
    unsigned char *at[2];
    size_t a, b;
} two_at;

static void *two_dest(void *user, size_t tensor, uint64_t nbytes, tl_dtype dtype) {
    (void)nbytes;
    (void)dtype;
    two_at *w = user;
    return w->at[tensor == w->b];
}

/*
 * dest_fresh with huge pages: the whole pages the caller leaves between two
 * destinations (memory it fills itself, or keeps untouched) are not faulted
 * in, though a 2 MiB page holding them is also a destination's. A cold file
 * in auto mode is read in place (buffered) into the caller's memory.
 */
static void test_fresh_gap_untouched(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *p = tu_path(dir, "m.safetensors");
    const uint64_t n = 3u << 20, gap = 64u << 10;
    st_tensor t[] = {{"a", "U8", n, 1, NULL, fill, (void *)3},
                     {"b", "U8", n, 1, NULL, fill, (void *)9}};
    st_write(p, t, 2);
    size_t fsz;
    unsigned char *file = (unsigned char *)tu_read_file(p, &fsz);
    const char *paths[] = {p};
    tl_model *m;
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    size_t len = 12u << 20;
    unsigned char *raw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(raw != MAP_FAILED);
    unsigned char *base = (unsigned char *)(((uintptr_t)raw + (2u << 20) - 1) & ~(uintptr_t)((2u << 20) - 1));
    two_at w = {{base, base + n + gap}, tl_model_find(m, "a"), tl_model_find(m, "b")};
    tl_load_options o;
    tl_load_options_init(&o);
    o.mode = TL_LOAD_BUFFERED;
    o.dest = two_dest;
    o.dest_user = &w;
    o.dest_fresh = true;
    o.hugepages = true;
    tl_load_result *r;
    if (tl_model_load(m, &o, &r)) fail_msg("%s", tl_last_error());
    assert_memory_equal(w.at[0], file + tl_model_tensor(m, w.a)->offset, n);
    assert_memory_equal(w.at[1], file + tl_model_tensor(m, w.b)->offset, n);
    unsigned char vec[16];
    assert_int_equal(mincore(base + n, gap, vec), 0);
    for (size_t i = 0; i < gap / 4096; i++)
        if (vec[i] & 1) fail_msg("page %zu of the gap between the destinations is resident", i);
    tl_load_result_destroy(r);
    /* cold, auto: read in place (buffered), as direct reads into such memory would be staged */
    memset(base, 0, 2 * n + gap);
    assert_int_equal(tl_file_evict(p), TL_OK);
    o.mode = TL_LOAD_AUTO;
    if (tl_model_load(m, &o, &r)) fail_msg("%s", tl_last_error());
    assert_int_equal(tl_load_result_file(r, 0)->mode, TL_LOAD_BUFFERED);
    assert_non_null(strstr(tl_load_result_file(r, 0)->reason, "cold"));
    assert_memory_equal(w.at[1], file + tl_model_tensor(m, w.b)->offset, n);
    tl_load_result_destroy(r);
    munmap(raw, len);
    tl_model_close(m);
    free(file);
    free(p);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_subset_into_caller_memory),
                                       cmocka_unit_test(test_fresh_caller_memory),
                                       cmocka_unit_test(test_fresh_gap_untouched)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
