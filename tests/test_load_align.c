/*
 * test_load_align.c — tl_load_options.align: host copies land at addresses
 * aligned to the dtype's natural alignment (TL_LOAD_ALIGN_ELEMENT) or to a
 * requested power of two, whatever the tensor's offset in the file, and hold
 * the file's bytes. The file is built so that an F64 tensor sits at a file
 * offset of 6 modulo 8 (and an F16 one at an odd multiple of 2), the case a
 * copy that mirrors the file's offsets gets wrong.
 */
#include "testutil.h"

#include "helpers/st_writer.h"

#include <stdlib.h>
#include <string.h>

static char *dir, *path;
static uint8_t data[44];

/* u8 [6] at 0, F64 [4] at 6 (6 mod 8), F16 [3] at 38 (38 mod 4 = 2). */
static void make_model(void) {
    dir = tu_tmpdir();
    path = tu_path(dir, "align.safetensors");
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 37 + 11);
    size_t len = 0;
    uint8_t *img = sw_build_raw(
        "{\"u8\":{\"dtype\":\"U8\",\"shape\":[6],\"data_offsets\":[0,6]},"
        "\"d\":{\"dtype\":\"F64\",\"shape\":[4],\"data_offsets\":[6,38]},"
        "\"h\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[38,44]}}",
        data, sizeof data, true, &len);
    assert_int_equal(sw_data_offset(img) % 8, 0);
    assert_true(sw_write_file(path, img, len));
    free(img);
}

static tl_load_result *load(tl_model *m, tl_load_mode mode, uint32_t align) {
    tl_load_options o;
    tl_load_options_init(&o);
    o.mode = mode;
    o.align = align;
    tl_load_result *r = NULL;
    tl_status s = tl_model_load(m, &o, &r);
    if (s != TL_OK) fail_msg("load: %s", tl_last_error());
    return r;
}

static tl_model *open_model(void) {
    const char *paths[] = {path};
    tl_model *m = NULL;
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    return m;
}

static void check(tl_model *m, tl_load_result *r, const char *name, uintptr_t want_align,
                  size_t off, size_t n) {
    size_t i = tl_model_find(m, name);
    assert_true(i != TL_NOT_FOUND);
    const tl_loaded_tensor *t = tl_load_result_tensor(r, i);
    assert_non_null(t);
    assert_false(t->view);
    if ((uintptr_t)t->data % want_align != 0)
        fail_msg("%s at %p is not aligned to %zu", name, t->data, (size_t)want_align);
    assert_true(t->nbytes == n);
    assert_memory_equal(t->data, data + off, n);
}

static void test_element_alignment(void **state) {
    (void)state;
    static const tl_load_mode modes[] = {TL_LOAD_BUFFERED, TL_LOAD_DIRECT, TL_LOAD_AUTO};
    for (size_t k = 0; k < 3; k++) {
        tl_model *m = open_model();
        tl_load_result *r = load(m, modes[k], TL_LOAD_ALIGN_ELEMENT);
        check(m, r, "u8", 1, 0, 6);
        check(m, r, "d", 8, 6, 32);
        check(m, r, "h", 2, 38, 6);
        tl_load_result_destroy(r);
        tl_model_close(m);
    }
}

static void test_requested_alignment(void **state) {
    (void)state;
    static const uint32_t aligns[] = {64, 4096};
    for (size_t k = 0; k < 2; k++) {
        tl_model *m = open_model();
        tl_load_result *r = load(m, TL_LOAD_BUFFERED, aligns[k]);
        check(m, r, "u8", aligns[k], 0, 6);
        check(m, r, "d", aligns[k], 6, 32);
        check(m, r, "h", aligns[k], 38, 6);
        tl_load_result_destroy(r);
        tl_model_close(m);
    }
}

int main(void) {
    make_model();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_element_alignment),
        cmocka_unit_test(test_requested_alignment),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tu_tmpdir_rm(dir);
    free(path);
    return rc;
}
