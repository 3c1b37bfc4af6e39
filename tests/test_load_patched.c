/*
 * test_load_patched.c — a tensor patched through the copy-on-write mapping
 * keeps its patch through every load: mmap, buffered, direct and auto, warm
 * and cold, with and without conversion, and verify accepts the patched
 * bytes (and still catches real corruption of unpatched ones). Dropping the
 * patch gives the file's bytes back. Expected values are computed here from
 * the bytes the test wrote and the patch it applied.
 */
#include "testutil.h"

#include "test_load_st.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>

enum { N = 300000 }; /* elements per tensor: several 64 KiB chunks */

static void fill_a(void *buf, uint64_t off, uint64_t len, void *ctx) {
    (void)ctx;
    for (uint64_t i = 0; i < len; i++)
        ((unsigned char *)buf)[i] = (unsigned char)((off + i) * 7 + 3);
}

/* F32 values 0.5 * k, exactly representable in F16: conversion is exact */
static void fill_f32(void *buf, uint64_t off, uint64_t len, void *ctx) {
    (void)ctx;
    for (uint64_t i = 0; i < len; i += 4) {
        float v = (float)(((off + i) / 4) % 2000) * 0.5f;
        memcpy((unsigned char *)buf + i, &v, 4);
    }
}

static uint16_t half_of(float v) { /* exact for the values used (k/2, k < 4096) */
    if (v == 0) return 0;
    int e;
    float m = frexpf(v, &e); /* v = m * 2^e, 0.5 <= m < 1 */
    uint16_t mant = (uint16_t)((m * 2 - 1) * 1024);
    return (uint16_t)(((e - 1 + 15) << 10) | mant);
}

static void test_patch_survives_every_mode(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *p = tu_path(dir, "m.safetensors");
    st_tensor t[] = {
        {"a.u8", "U8", N, 1, NULL, fill_a, NULL},
        {"b.f32", "F32", N, 4, NULL, fill_f32, NULL},
        {"c.f32", "F32", N, 4, NULL, fill_f32, NULL},
    };
    st_write(p, t, 3);
    struct stat before;
    assert_int_equal(stat(p, &before), 0);
    size_t fsz;
    unsigned char *file = (unsigned char *)tu_read_file(p, &fsz);

    tl_model_options mo;
    tl_model_options_init(&mo);
    mo.writable = true;
    const char *paths[] = {p};
    tl_model *m;
    assert_int_equal(tl_model_open(paths, 1, &mo, &m), TL_OK);
    size_t ia = (size_t)tl_model_find(m, "a.u8"), ib = (size_t)tl_model_find(m, "b.f32");
    assert_false(tl_model_tensor_patched(m, ib));
    /* patch b: element k becomes 1000.5 for k = 7, 70000, N-1; one byte of a */
    float *wb = tl_model_tensor_data_mut(m, ib);
    const size_t pk[] = {7, 70000, N - 1};
    for (int k = 0; k < 3; k++)
        wb[pk[k]] = 1000.5f;
    unsigned char *wa = tl_model_tensor_data_mut(m, ia);
    wa[12345] ^= 0xFF;
    assert_true(tl_model_tensor_patched(m, ib));

    const tl_load_mode modes[] = {TL_LOAD_MMAP, TL_LOAD_BUFFERED, TL_LOAD_DIRECT, TL_LOAD_AUTO};
    for (int cold = 0; cold < 2; cold++)
        for (int mi = 0; mi < 4; mi++)
            for (int conv = 0; conv < 2; conv++) {
                if (cold) assert_int_equal(tl_file_evict(p), TL_OK);
                tl_load_options o;
                tl_load_options_init(&o);
                o.mode = modes[mi];
                o.verify = true;
                o.convert = conv;
                o.dtype = TL_DTYPE_F16;
                o.staging_size = 64 << 10;
                tl_load_result *r = NULL;
                tl_status s = tl_model_load(m, &o, &r);
                if (s) fail_msg("mode %d conv %d cold %d: %s", mi, conv, cold, tl_last_error());
                /* a: the file's bytes with the patched one */
                const tl_loaded_tensor *la = tl_load_result_tensor(r, ia);
                const unsigned char *fa = file + tl_model_tensor(m, ia)->offset;
                for (size_t k = 0; k < N; k++)
                    if (((const unsigned char *)la->data)[k] !=
                        (k == 12345 ? (unsigned char)(fa[k] ^ 0xFF) : fa[k]))
                        fail_msg("a[%zu] wrong (mode %d conv %d cold %d)", k, mi, conv, cold);
                /* b: 0.5 * (k % 2000), patched to 1000.5 */
                const tl_loaded_tensor *lb = tl_load_result_tensor(r, ib);
                for (size_t k = 0; k < N; k++) {
                    float want = (float)(k % 2000) * 0.5f;
                    for (int q = 0; q < 3; q++)
                        if (k == pk[q]) want = 1000.5f;
                    if (conv) {
                        uint16_t h;
                        memcpy(&h, (const unsigned char *)lb->data + 2 * k, 2);
                        if (h != half_of(want))
                            fail_msg("b[%zu] %04x != %04x (mode %d cold %d)", k, h, half_of(want),
                                     mi, cold);
                    } else {
                        float v;
                        memcpy(&v, (const unsigned char *)lb->data + 4 * k, 4);
                        if (v != want) fail_msg("b[%zu] %g != %g (mode %d)", k, v, want, mi);
                    }
                }
                tl_load_result_destroy(r);
            }
    /* the file never changed */
    struct stat after;
    assert_int_equal(stat(p, &after), 0);
    assert_int_equal(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
    assert_int_equal(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
    size_t fsz2;
    char *file2 = tu_read_file(p, &fsz2);
    assert_int_equal(fsz2, fsz);
    assert_memory_equal(file2, file, fsz);
    free(file2);

    /* unpatching gives the file's bytes back, and the tensor is clean again */
    assert_int_equal(tl_model_tensor_unpatch(m, ib), TL_OK);
    assert_false(tl_model_tensor_patched(m, ib));
    const tl_tensor_info *tb = tl_model_tensor(m, ib);
    assert_memory_equal(tl_model_tensor_data(m, ib), file + tb->offset, tb->nbytes);
    /* a still patched */
    assert_int_equal(((const unsigned char *)tl_model_tensor_data(m, ia))[12345],
                     (unsigned char)(file[tl_model_tensor(m, ia)->offset + 12345] ^ 0xFF));
    tl_model_close(m);
    free(file);
    free(p);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_patch_survives_every_mode)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
