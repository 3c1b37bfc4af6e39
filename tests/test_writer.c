/*
 * test_writer.c — the model-file writer (tl_writer_*): GGUF and safetensors
 * files written with it open in tierload with the metadata, names, shapes,
 * sizes and offsets that were given (sizes stated here by hand, never derived
 * by the writer), GGUF data aligned to general.alignment, the bytes written at
 * the offsets it assigned read back; headers the readers would refuse are
 * refused (a safetensors header over 100 MB), and bad arguments are errors.
 */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

/* Write header + data section (tensor i filled with byte 'A' + i) to path. */
static void write_with(tl_writer *w, const char *path) {
    const void *h;
    size_t hlen;
    if (tl_writer_header(w, &h, &hlen) != TL_OK) fail_msg("header: %s", tl_last_error());
    uint64_t dsize = tl_writer_data_size(w);
    unsigned char *img = calloc(1, hlen + dsize + 1);
    memcpy(img, h, hlen);
    for (size_t i = 0; i < tl_writer_tensor_count(w); i++) {
        uint64_t off = tl_writer_tensor_offset(w, i), end = i + 1 < tl_writer_tensor_count(w)
                                                                ? tl_writer_tensor_offset(w, i + 1)
                                                                : dsize;
        for (uint64_t k = off; k < end; k++)
            img[hlen + k] = (unsigned char)('A' + i);
    }
    tu_write_file(path, img, hlen + dsize);
    free(img);
}

static void test_gguf_round_trip(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "w.gguf");
    tl_writer *w;
    assert_int_equal(tl_writer_create(TL_FORMAT_GGUF, &w), TL_OK);
    assert_int_equal(tl_writer_meta_string(w, "general.architecture", "llama"), TL_OK);
    assert_int_equal(tl_writer_meta_u32(w, "general.alignment", 64), TL_OK);
    /* sizes by hand: 3x5 F16 = 30 bytes; 64 Q8_0 = 2 blocks x 34 = 68 bytes; 7 F32 = 28 */
    const int64_t s0[2] = {3, 5}, s1[2] = {2, 32}, s2[1] = {7};
    size_t i0, i1, i2;
    assert_int_equal(tl_writer_tensor(w, "a", TL_DTYPE_F16, 2, s0, 30, &i0), TL_OK);
    assert_int_equal(tl_writer_tensor(w, "b.q", TL_DTYPE_Q8_0, 2, s1, 68, &i1), TL_OK);
    assert_int_equal(tl_writer_tensor(w, "c", TL_DTYPE_F32, 1, s2, 28, &i2), TL_OK);
    assert_int_equal(i2, 2);
    write_with(w, path);
    /* offsets packed in order, each aligned to 64; the data section ends padded */
    assert_int_equal(tl_writer_tensor_offset(w, 0), 0);
    assert_int_equal(tl_writer_tensor_offset(w, 1), 64);
    assert_int_equal(tl_writer_tensor_offset(w, 2), 192);
    assert_int_equal(tl_writer_data_size(w), 256);
    tl_writer_destroy(w);
    tl_model *m;
    const char *p[] = {path};
    if (tl_model_open(p, 1, NULL, &m) != TL_OK) fail_msg("open: %s", tl_last_error());
    const tl_file_info *fi = tl_model_file(m, 0);
    assert_int_equal(fi->version, 3);
    assert_int_equal(fi->alignment, 64);
    assert_int_equal(fi->data_offset % 64, 0);
    assert_int_equal(tl_model_tensor_count(m), 3);
    const uint64_t want_bytes[3] = {30, 68, 28}, want_rel[3] = {0, 64, 192};
    for (size_t i = 0; i < 3; i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        assert_int_equal(t->nbytes, want_bytes[i]);
        assert_int_equal(t->offset, fi->data_offset + want_rel[i]);
        const unsigned char *d = tl_model_tensor_data(m, i);
        for (uint64_t k = 0; k < t->nbytes; k++)
            assert_int_equal(d[k], 'A' + i);
    }
    assert_int_equal(tl_model_tensor(m, 0)->shape[0], 3); /* outermost first, as given */
    assert_int_equal(tl_model_tensor(m, 0)->shape[1], 5);
    assert_int_equal(tl_model_tensor(m, 1)->dtype, TL_DTYPE_Q8_0);
    int64_t k = tl_model_meta_find(m, "general.architecture");
    assert_true(k >= 0);
    const tl_meta *mt = tl_model_meta(m, (size_t)k);
    assert_int_equal(mt->type, TL_META_STRING);
    assert_int_equal(mt->v.s.len, 5);
    assert_memory_equal(mt->v.s.ptr, "llama", 5);
    tl_model_close(m);
    free(path);
    tu_tmpdir_rm(dir);
}

static void test_safetensors_round_trip(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "w.safetensors");
    tl_writer *w;
    assert_int_equal(tl_writer_create(TL_FORMAT_SAFETENSORS, &w), TL_OK);
    assert_int_equal(tl_writer_meta_string(w, "format", "pt"), TL_OK);
    assert_int_equal(tl_writer_meta_string(w, "quote\"and\\back", "tab\there"), TL_OK);
    assert_int_equal(tl_writer_meta_u32(w, "n", 1), TL_ERR_UNSUPPORTED); /* strings only */
    const int64_t s0[2] = {2, 3}, s1[1] = {5};
    assert_int_equal(tl_writer_tensor(w, "x.weight", TL_DTYPE_BF16, 2, s0, 12, NULL), TL_OK);
    assert_int_equal(tl_writer_tensor(w, "x.bias", TL_DTYPE_F32, 1, s1, 20, NULL), TL_OK);
    write_with(w, path);
    assert_int_equal(tl_writer_tensor_offset(w, 1), 12); /* packed */
    assert_int_equal(tl_writer_data_size(w), 32);
    tl_writer_destroy(w);
    tl_model *m;
    const char *p[] = {path};
    if (tl_model_open(p, 1, NULL, &m) != TL_OK) fail_msg("open: %s", tl_last_error());
    assert_int_equal(tl_model_file(m, 0)->data_offset % 8, 0);
    assert_int_equal(tl_model_tensor_count(m), 2);
    int64_t b = tl_model_find(m, "x.bias");
    assert_true(b >= 0);
    assert_int_equal(tl_model_tensor(m, (size_t)b)->nbytes, 20);
    assert_int_equal(((const unsigned char *)tl_model_tensor_data(m, (size_t)b))[19], 'B');
    int64_t k = tl_model_meta_find(m, "quote\"and\\back");
    assert_true(k >= 0);
    const tl_meta *mt = tl_model_meta(m, (size_t)k);
    assert_int_equal(mt->v.s.len, 8);
    assert_memory_equal(mt->v.s.ptr, "tab\there", 8);
    tl_model_close(m);
    free(path);
    tu_tmpdir_rm(dir);
}

static void test_refusals(void **state) {
    (void)state;
    tl_writer *w;
    assert_int_equal(tl_writer_create((tl_format)7, &w), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_writer_create(TL_FORMAT_SAFETENSORS, &w), TL_OK);
    const int64_t shape[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    assert_int_equal(tl_writer_tensor(w, "nine", TL_DTYPE_U8, 9, shape, 1, NULL),
                     TL_ERR_INVALID_ARG);
    /* a header over the 100 MB the safetensors readers accept */
    size_t big = 100000001;
    char *v = malloc(big + 1);
    memset(v, 'x', big);
    v[big] = 0;
    assert_int_equal(tl_writer_meta_string(w, "huge", v), TL_OK);
    free(v);
    const void *h;
    size_t hlen;
    assert_int_equal(tl_writer_header(w, &h, &hlen), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "readers accept at most"));
    tl_writer_destroy(w);
    /* packed offsets that overflow are an error, not a wrapped layout */
    assert_int_equal(tl_writer_create(TL_FORMAT_GGUF, &w), TL_OK);
    const int64_t s1[1] = {1};
    assert_int_equal(tl_writer_tensor(w, "a", TL_DTYPE_U8, 1, s1, UINT64_MAX - 8, NULL), TL_OK);
    assert_int_equal(tl_writer_tensor(w, "b", TL_DTYPE_U8, 1, s1, 64, NULL), TL_OK);
    assert_int_equal(tl_writer_header(w, &h, &hlen), TL_ERR_INVALID_ARG);
    tl_writer_destroy(w);
    tl_writer_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_round_trip),
        cmocka_unit_test(test_safetensors_round_trip),
        cmocka_unit_test(test_refusals),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
