/*
 * test_safetensors_strict.c — numbers and names as strict as the reference
 * reader (serde_json into integer fields, Rust strings): shapes and offsets
 * written as floats or exponents ("4.0", "1.6e1"), "-0" and leading zeros are
 * refused; a name holding NUL (\u0000) or invalid UTF-8 is refused instead of
 * being cut short; and an empty tensor (shape [0]) loads in every mode, with
 * conversion and verify, without undefined behaviour (the sanitizer build
 * checks pointer arithmetic on it).
 */
#include "testutil.h"

#include "st_writer.h"

#include <stdlib.h>
#include <string.h>

static tl_status open_header(const char *dir, const char *hdr, const void *data, size_t n) {
    size_t len;
    uint8_t *img = sw_build_raw(hdr, data, n, true, &len);
    char *p = tu_path(dir, "strict.safetensors");
    assert_true(sw_write_file(p, img, len));
    free(img);
    tl_model *m = NULL;
    const char *pp = p;
    tl_status st = tl_model_open(&pp, 1, NULL, &m);
    if (st == TL_OK) {
        print_message("accepted: %s (tensor '%s')\n", hdr, tl_model_tensor(m, 0)->name);
        tl_model_close(m);
    } else if (!strstr(tl_last_error(), "strict.safetensors")) {
        fail_msg("the message does not name the file: %s", tl_last_error());
    }
    free(p);
    return st;
}

static void test_numbers_must_be_integers(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    unsigned char data[16] = {0};
    const char *bad[] = {
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[4.0],\"data_offsets\":[0,16]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,1.6e1]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16E0]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[-0,16]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[04],\"data_offsets\":[0,16]}}",
    };
    int accepted = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tl_status st = open_header(dir, bad[i], data, 16);
        if (st == TL_OK) accepted++;
        else assert_int_equal(st, TL_ERR_FORMAT);
    }
    assert_int_equal(accepted, 0);
    /* the plain spelling opens */
    assert_int_equal(open_header(dir, "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
                                 data, 16),
                     TL_OK);
    tu_tmpdir_rm(dir);
}

static void test_names_without_nul_and_valid_utf8(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    unsigned char data[4] = {0};
    int accepted = 0;
    /* "a\u0000b": a NUL escape would cut the name to "a" */
    tl_status st = open_header(dir, "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                               data, 4);
    if (st == TL_OK) accepted++;
    /* invalid UTF-8 in a name: a lone continuation byte, an overlong '/' */
    st = open_header(dir, "{\"a\x80\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 4);
    if (st == TL_OK) accepted++;
    st = open_header(dir, "{\"a\xc0\xaf\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 4);
    if (st == TL_OK) accepted++;
    /* a raw control character inside a name */
    st = open_header(dir, "{\"a\x01\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 4);
    if (st == TL_OK) accepted++;
    assert_int_equal(accepted, 0);
    /* escapes that are valid stay valid: "\u00e9" is é */
    assert_int_equal(open_header(dir, "{\"caf\\u00e9\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                                 data, 4),
                     TL_OK);
    tu_tmpdir_rm(dir);
}

static void test_empty_tensor_loads(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *p = tu_path(dir, "empty.safetensors");
    size_t len;
    uint8_t *img = sw_build_raw("{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}",
                                NULL, 0, true, &len);
    assert_true(sw_write_file(p, img, len));
    free(img);
    const tl_load_mode modes[] = {TL_LOAD_BUFFERED, TL_LOAD_DIRECT, TL_LOAD_MMAP, TL_LOAD_AUTO};
    for (size_t k = 0; k < 4; k++)
        for (int conv = 0; conv < 2; conv++) {
            tl_model *m = NULL;
            const char *pp = p;
            assert_int_equal(tl_model_open(&pp, 1, NULL, &m), TL_OK);
            tl_load_options o;
            tl_load_options_init(&o);
            o.mode = modes[k];
            o.verify = true;
            o.convert = conv;
            o.dtype = TL_DTYPE_F16;
            tl_load_result *r = NULL;
            assert_int_equal(tl_model_load(m, &o, &r), TL_OK);
            assert_int_equal(tl_load_result_tensor(r, 0)->nbytes, 0);
            tl_load_result_destroy(r);
            tl_model_close(m);
        }
    free(p);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbers_must_be_integers),
        cmocka_unit_test(test_names_without_nul_and_valid_utf8),
        cmocka_unit_test(test_empty_tensor_loads),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
