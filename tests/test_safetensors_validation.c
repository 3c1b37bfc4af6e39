/*
 * test_safetensors_validation.c — the safetensors parser against the
 * reference implementation's rules, on images the test writes: every dtype
 * of the current spec (including F4/F6 bit sizes) parses with exact sizes;
 * each rule — header size limit, header past EOF, leading '{', UTF-8, JSON,
 * contiguous offsets from 0 with no holes or overlaps, END - BEGIN equal to
 * the element count times the dtype size without overflow, data ending
 * exactly at EOF — rejects its hostile input with a message naming the file
 * (and tensor); plus duplicates, unknown dtypes, bad metadata, truncation at
 * every byte.
 */
#include "testutil.h"

#include "format/format.h"
#include "st_writer.h"

#include <stdlib.h>
#include <string.h>

#define PATH "hostile.safetensors"

static void expect_raw(const char *header, size_t data_len, bool pad8, tl_status want,
                       const char *needle) {
    uint8_t *data = calloc(1, data_len ? data_len : 1);
    size_t len;
    uint8_t *img = sw_build_raw(header, data, data_len, pad8, &len);
    tl__fmt_file f;
    tl_status got = tl__safetensors_parse(img, len, PATH, &f);
    if (got != want)
        fail_msg("%s: got %s (%s), want %s", header, tl_status_name(got), tl_last_error(),
                 tl_status_name(want));
    if (want && (!strstr(tl_last_error(), PATH) || !strstr(tl_last_error(), needle)))
        fail_msg("message '%s' lacks the file or '%s'", tl_last_error(), needle);
    if (!want) tl__fmt_file_free(&f);
    free(img);
    free(data);
}

static void test_every_spec_dtype(void **state) {
    (void)state;
    static const struct {
        const char *name;
        uint64_t bits;
    } dt[] = {{"BOOL", 8},        {"U8", 8},         {"I8", 8},   {"F8_E5M2", 8}, {"F8_E4M3", 8},
              {"F8_E8M0", 8},     {"I16", 16},       {"U16", 16}, {"F16", 16},    {"BF16", 16},
              {"I32", 32},        {"U32", 32},       {"F32", 32}, {"F64", 64},    {"I64", 64},
              {"U64", 64},        {"C64", 64},       {"F4", 4},   {"F6_E2M3", 6}, {"F6_E3M2", 6},
              {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}};
    size_t n = sizeof dt / sizeof dt[0];
    sw_tensor ts[22];
    for (size_t i = 0; i < n; i++)
        ts[i] = (sw_tensor){dt[i].name, dt[i].name, 2, {4, 8}};
    size_t len;
    uint8_t *img = sw_build(ts, n, "{\"format\":\"pt\",\"k\":\"v\"}", true, &len);
    tl__fmt_file f;
    if (tl__safetensors_parse(img, len, PATH, &f)) fail_msg("%s", tl_last_error());
    assert_int_equal(f.n_tensors, n);
    assert_int_equal(f.data_offset % 8, 0);
    assert_int_equal(f.data_offset, sw_data_offset(img));
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(tl_dtype_name(f.tensors[i].dtype), dt[i].name);
        assert_int_equal(f.tensors[i].nbytes, 32 * dt[i].bits / 8);
        assert_int_equal(f.tensors[i].shape[0], 4);
        assert_int_equal(img[f.tensors[i].offset], sw_pattern_byte(i, 0));
    }
    assert_int_equal(f.n_meta, 2);
    assert_string_equal(f.meta[1].m.key, "k");
    assert_memory_equal(f.meta[1].m.v.s.ptr, "v", 1);
    tl__fmt_file_free(&f);
    /* truncation at every byte: an exact-size copy, so any over-read trips ASan */
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *p = malloc(cut ? cut : 1);
        memcpy(p, img, cut);
        tl_status st = tl__safetensors_parse(p, cut, PATH, &f);
        if (st != TL_ERR_FORMAT) fail_msg("cut at %zu: %s", cut, tl_status_name(st));
        free(p);
    }
    free(img);
}

static void test_header_rules(void **state) {
    (void)state;
    tl__fmt_file f;
    uint8_t small[7] = {0};
    assert_int_equal(tl__safetensors_parse(small, 7, PATH, &f), TL_ERR_FORMAT);
    assert_non_null(strstr(tl_last_error(), "8-byte header length"));
    /* header length above the 100,000,000-byte limit, and past the end of the file */
    uint8_t img[64] = {0};
    uint64_t n = 100000001;
    memcpy(img, &n, 8);
    assert_int_equal(tl__safetensors_parse(img, sizeof img, PATH, &f), TL_ERR_FORMAT);
    assert_non_null(strstr(tl_last_error(), "exceeds the 100000000-byte limit"));
    n = 100000000;
    memcpy(img, &n, 8);
    assert_int_equal(tl__safetensors_parse(img, sizeof img, PATH, &f), TL_ERR_FORMAT);
    assert_non_null(strstr(tl_last_error(), "runs past the end"));
    n = UINT64_MAX;
    memcpy(img, &n, 8);
    assert_int_equal(tl__safetensors_parse(img, sizeof img, PATH, &f), TL_ERR_FORMAT);
    expect_raw(" {}", 0, false, TL_ERR_FORMAT, "does not start with '{'");
    expect_raw("", 0, false, TL_ERR_FORMAT, "does not start with '{'");
    expect_raw("{\"a\xff\":1}", 0, false, TL_ERR_FORMAT, "not valid UTF-8");
    expect_raw("{\"\xed\xa0\x80\":1}", 0, false, TL_ERR_FORMAT, "not valid UTF-8"); /* surrogate */
    expect_raw("{\"\xc0\xaf\":1}", 0, false, TL_ERR_FORMAT, "not valid UTF-8");     /* overlong */
    expect_raw("{\"a\":", 0, false, TL_ERR_FORMAT, "not valid JSON");
    expect_raw("{}x", 0, false, TL_ERR_FORMAT, "after its JSON object");
    expect_raw("{}", 0, true, TL_OK, "");       /* padded with spaces */
    expect_raw("{}\n\t ", 0, false, TL_OK, ""); /* trailing whitespace */
    /* deeply nested JSON is refused by the JSON parser, not by the stack */
    char deep[4200] = "{\"a\":";
    for (int i = 0; i < 2000; i++)
        strcat(deep, "[");
    expect_raw(deep, 0, false, TL_ERR_FORMAT, "not valid JSON");
}

static void test_offset_rules(void **state) {
    (void)state;
    expect_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, false,
               TL_ERR_FORMAT, "'a': data starts at 4, expected 0");
    expect_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
               20, false, TL_ERR_FORMAT, "'b': data starts at 12, expected 8");
    expect_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, false, TL_ERR_FORMAT, "'b': data starts at 4, expected 8");
    expect_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", 12, false,
               TL_ERR_FORMAT, "'a': data_offsets span 12 bytes but F32 of its shape needs 8");
    expect_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, false,
               TL_ERR_FORMAT, "'a'");
    expect_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 9, false,
               TL_ERR_FORMAT, "trailing bytes");
    expect_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 7, false,
               TL_ERR_FORMAT, "truncated");
    expect_raw(
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8,
        false, TL_ERR_FORMAT, "'a'");
    expect_raw("{\"a\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,8]}}",
               8, false, TL_ERR_FORMAT, "'a'"); /* 2^61 elements x 8 bytes overflows */
    expect_raw("{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2, false,
               TL_ERR_FORMAT, "not a whole number"); /* 12 bits */
    expect_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, false, TL_OK,
               "");
    expect_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]}}", 0, false,
               TL_OK, "");
    expect_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,9007199254740994]}}", 8,
               false, TL_ERR_FORMAT, "not non-negative integers");
}

static void test_entry_rules(void **state) {
    (void)state;
    expect_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, false, TL_ERR_FORMAT, "duplicate tensor name 'a'");
    const char *bad_dtypes[] = {"F7", "f32", "Q4_0", "IQ2_XXS", ""};
    for (size_t i = 0; i < 5; i++) {
        char h[160];
        snprintf(h, sizeof h, "{\"t\":{\"dtype\":\"%s\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                 bad_dtypes[i]);
        expect_raw(h, 4, false, TL_ERR_FORMAT, "'t': unknown dtype");
    }
    expect_raw("{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, false, TL_ERR_FORMAT,
               "\"dtype\"");
    expect_raw("{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, false, TL_ERR_FORMAT,
               "\"shape\"");
    expect_raw("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, false,
               TL_ERR_FORMAT, "[begin, end]");
    expect_raw("{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, false,
               TL_ERR_FORMAT, "shape[0]");
    expect_raw("{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, false,
               TL_ERR_FORMAT, "shape[0]");
    expect_raw("{\"t\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, false,
               TL_ERR_FORMAT, "shape[0]");
    expect_raw("{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
               4, false, TL_ERR_UNSUPPORTED, "9 dimensions");
    expect_raw("{\"t\":7}", 0, false, TL_ERR_FORMAT, "'t': entry is not an object");
    expect_raw("[]", 0, false, TL_ERR_FORMAT, "does not start with '{'");
    expect_raw("{\"__metadata__\":{\"k\":1}}", 0, false, TL_ERR_FORMAT,
               "__metadata__ key 'k' is not a string");
    expect_raw("{\"__metadata__\":[]}", 0, false, TL_ERR_FORMAT, "__metadata__ is not an object");
    expect_raw("{\"__metadata__\":{},\"__metadata__\":{}}", 0, false, TL_ERR_FORMAT,
               "duplicate __metadata__");
}

/* Names have no limit of their own (neither the format nor torch's or sd.cpp's readers set one):
 * a 4,000-byte name opens and comes back whole. */
static void test_long_name(void **state) {
    (void)state;
    size_t nlen = 4000;
    char *h = malloc(nlen + 128);
    memcpy(h, "{\"", 2);
    memset(h + 2, 'x', nlen);
    strcpy(h + 2 + nlen, "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}");
    uint8_t data[4] = {0};
    size_t len;
    uint8_t *img = sw_build_raw(h, data, sizeof data, false, &len);
    tl__fmt_file f;
    if (tl__safetensors_parse(img, len, PATH, &f)) fail_msg("%s", tl_last_error());
    assert_int_equal(f.n_tensors, 1);
    assert_int_equal(strlen(f.tensors[0].name), nlen);
    tl__fmt_file_free(&f);
    free(img);
    free(h);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_spec_dtype), cmocka_unit_test(test_header_rules),
        cmocka_unit_test(test_offset_rules),     cmocka_unit_test(test_entry_rules),
        cmocka_unit_test(test_long_name),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
