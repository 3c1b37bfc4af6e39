/*
 * test_gguf_validation.c — the GGUF parser on files the test writes itself:
 * every metadata type and array shape reads back exactly, both versions and
 * non-default alignments lay out right, every ggml type's size is exact, and
 * each validation rule rejects its hostile input with a clear message that
 * names the file (and the tensor or key): truncation at every byte, counts and
 * lengths near 2^64, unknown and removed type ids, misaligned offsets, bad
 * alignments, duplicates, deep nesting, overlap, data past the end; and
 * ggml's own limits (empty keys, 64 MiB strings, 2^26-element arrays,
 * alignment up to 1 MiB, names up to 159 bytes as stable-diffusion.cpp's ggml).
 */
#include "testutil.h"

#include "format/format.h"
#include "dtype_spec.h"
#include "gguf_writer.h"

#include <stdlib.h>
#include <string.h>

#define PATH "hostile.gguf"

static tl_status parse(const uint8_t *img, size_t len, tl__fmt_file *f) {
    return tl__gguf_parse(img, len, PATH, f);
}

/* Build, parse, expect failure with status st and a message containing needle. */
static void expect_reject(gw_gguf *g, tl_status st, const char *needle) {
    size_t len;
    uint8_t *img = gw_build(g, &len);
    tl__fmt_file f;
    tl_status got = parse(img, len, &f);
    if (got != st)
        fail_msg("got %s (%s), want %s with '%s'", tl_status_name(got), tl_last_error(),
                 tl_status_name(st), needle);
    if (!strstr(tl_last_error(), PATH) || !strstr(tl_last_error(), needle))
        fail_msg("message '%s' lacks the file or '%s'", tl_last_error(), needle);
    assert_int_equal(f.n_tensors, 0); /* left empty */
    free(img);
    gw_free(g);
}

static gw_gguf *one_tensor(uint32_t version) {
    gw_gguf *g = gw_new(version);
    gw_kv_str(g, "general.architecture", "llama");
    int64_t ne[2] = {64, 3};
    gw_tensor(g, "blk.0.attn_q.weight", TL_DTYPE_Q8_0, 2, ne);
    return g;
}

static void test_every_metadata_type_reads_back(void **state) {
    (void)state;
    for (uint32_t version = 2; version <= 3; version++) {
        gw_gguf *g = gw_new(version);
        gw_kv_u8(g, "u8", 250);
        gw_kv_i8(g, "i8", -5);
        gw_kv_u16(g, "u16", 65000);
        gw_kv_i16(g, "i16", -32000);
        gw_kv_u32(g, "u32", 4000000000u);
        gw_kv_i32(g, "i32", -2000000000);
        gw_kv_f32(g, "f32", 0.5f);
        gw_kv_bool(g, "bool", true);
        gw_kv_str(g, "str", "hello");
        gw_kv_u64(g, "u64", UINT64_MAX);
        gw_kv_i64(g, "i64", INT64_MIN);
        gw_kv_f64(g, "f64", -1.25);
        const char *toks[] = {"<s>", "", "tok\xc3\xa9"};
        gw_kv_str_array(g, "strs", toks, 3);
        int16_t shorts[] = {-1, 2, -3};
        gw_kv_array(g, "i16s", TL_META_I16, 3, shorts);
        gw_kv_array(g, "empty", TL_META_F32, 0, NULL);
        gw_kv_nested_u32(g, "nested", 3);
        size_t len;
        uint8_t *img = gw_build(g, &len);
        tl__fmt_file f;
        if (parse(img, len, &f)) fail_msg("%s", tl_last_error());
        assert_int_equal(f.version, (int32_t)version);
        assert_int_equal(f.n_meta, 16);
        assert_int_equal(f.meta[0].m.v.u, 250);
        assert_int_equal(f.meta[1].m.v.i, -5);
        assert_int_equal(f.meta[2].m.v.u, 65000);
        assert_int_equal(f.meta[3].m.v.i, -32000);
        assert_int_equal(f.meta[4].m.v.u, 4000000000u);
        assert_int_equal(f.meta[5].m.v.i, -2000000000);
        assert_true(f.meta[6].m.v.f == 0.5);
        assert_true(f.meta[7].m.v.b);
        assert_int_equal(f.meta[8].m.v.s.len, 5);
        assert_memory_equal(f.meta[8].m.v.s.ptr, "hello", 5);
        assert_true(f.meta[9].m.v.u == UINT64_MAX);
        assert_true(f.meta[10].m.v.i == INT64_MIN);
        assert_true(f.meta[11].m.v.f == -1.25);
        tl_meta e;
        assert_int_equal(f.meta[12].m.count, 3);
        assert_int_equal(tl__fmt_meta_array_get(&f.meta[12], 2, &e), TL_OK);
        assert_int_equal(e.v.s.len, 5);
        assert_memory_equal(e.v.s.ptr, "tok\xc3\xa9", 5);
        assert_int_equal(tl__fmt_meta_array_get(&f.meta[12], 1, &e), TL_OK);
        assert_int_equal(e.v.s.len, 0);
        assert_int_equal(tl__fmt_meta_array_get(&f.meta[13], 2, &e), TL_OK);
        assert_int_equal(e.v.i, -3);
        assert_int_equal(f.meta[14].m.count, 0);
        assert_int_equal(tl__fmt_meta_array_get(&f.meta[14], 0, &e), TL_ERR_INVALID_ARG);
        assert_int_equal(f.meta[15].m.depth, 2);
        assert_int_equal(f.meta[15].m.count, 3);
        assert_int_equal(tl__fmt_meta_array_get(&f.meta[15], 0, &e), TL_ERR_UNSUPPORTED);
        tl__fmt_file_free(&f);
        free(img);
        gw_free(g);
    }
}

static void test_every_ggml_type_is_exact(void **state) {
    (void)state;
    gw_gguf *g = gw_new(3);
    gw_kv_u32(g, "general.alignment", 64);
    size_t n = 0;
    /* every ggml type of the spec table (dtype_spec.c), sized from it */
    for (int id = 0; id < TL_GGML_TYPE_COUNT; id++) {
        const tu_dtype_spec *sp = tu_dtype_spec_of(id);
        if (!sp) continue;
        int64_t ne[3] = {(int64_t)sp->block_elems * 3, 5, 2};
        gw_tensor(g, sp->name, (uint32_t)id, 3, ne);
        n++;
    }
    assert_int_equal(n, 35);
    size_t len;
    uint8_t *img = gw_build(g, &len);
    tl__fmt_file f;
    if (parse(img, len, &f)) fail_msg("%s", tl_last_error());
    assert_int_equal(f.alignment, 64);
    assert_int_equal(f.data_offset % 64, 0);
    assert_int_equal(f.data_offset, gw_data_offset(g));
    for (size_t i = 0; i < f.n_tensors; i++) {
        const tl__fmt_tensor *t = &f.tensors[i];
        const tu_dtype_spec *sp = tu_dtype_spec_named(t->name);
        assert_non_null(sp);
        assert_int_equal(t->dtype, sp->id);
        assert_int_equal(t->nbytes, gw_tensor_size(g, i));
        assert_int_equal(t->nbytes, 3 * 5 * 2 * sp->block_bits / 8);
        assert_int_equal(t->offset, gw_tensor_abs_offset(g, i));
        assert_int_equal(t->n_dims, 3);
        assert_int_equal(t->shape[0], 2); /* outermost first */
        assert_int_equal(t->shape[2], (int64_t)sp->block_elems * 3);
        assert_int_equal(img[t->offset + 1], gw_pattern_byte(i, 1));
    }
    tl__fmt_file_free(&f);
    free(img);
    gw_free(g);
}

static void test_truncation_at_every_byte(void **state) {
    (void)state;
    gw_gguf *g = one_tensor(3);
    const char *toks[] = {"a", "bb"};
    gw_kv_str_array(g, "tokens", toks, 2);
    gw_kv_nested_u32(g, "nested", 2);
    size_t len;
    uint8_t *img = gw_build(g, &len);
    tl__fmt_file f;
    assert_int_equal(parse(img, len, &f), TL_OK);
    tl__fmt_file_free(&f);
    /* every cut before the last tensor's last byte (after it there is only padding) */
    size_t end = (size_t)(gw_tensor_abs_offset(g, 0) + gw_tensor_size(g, 0));
    assert_true(end <= len);
    for (size_t cut = 0; cut < end; cut++) {
        uint8_t *p = malloc(cut ? cut : 1); /* exact-size copy: ASan catches any over-read */
        memcpy(p, img, cut);
        tl_status st = parse(p, cut, &f);
        if (st != TL_ERR_FORMAT) fail_msg("cut at %zu: %s", cut, tl_status_name(st));
        assert_non_null(strstr(tl_last_error(), PATH));
        free(p);
    }
    free(img);
    gw_free(g);
}

static void test_counts_near_2_64(void **state) {
    (void)state;
    gw_gguf *g = one_tensor(3);
    gw_set_counts(g, UINT64_MAX, 1);
    expect_reject(g, TL_ERR_FORMAT, "tensor count");
    g = one_tensor(3);
    gw_set_counts(g, 1, UINT64_MAX);
    expect_reject(g, TL_ERR_FORMAT, "metadata count");
    g = one_tensor(3);
    gw_set_counts(g, 1ull << 62, 1);
    expect_reject(g, TL_ERR_FORMAT, "exceeds");
    /* counts the bytes could hold, but beyond any real model: refused before allocating */
    {
        size_t big = (size_t)(1ull << 24) * 24 + 4096;
        uint8_t *img = calloc(1, big);
        memcpy(img, "GGUF", 4);
        uint32_t v3 = 3;
        uint64_t nt = (1ull << 24) + 1, nkv = 0;
        memcpy(img + 4, &v3, 4);
        memcpy(img + 8, &nt, 8);
        memcpy(img + 16, &nkv, 8);
        tl__fmt_file f;
        assert_int_equal(parse(img, big, &f), TL_ERR_UNSUPPORTED);
        assert_non_null(strstr(tl_last_error(), "exceed tierload's limits"));
        free(img);
    }
    /* a key length of 2^64-1 */
    gw_buf v = {0};
    gw_buf_u64(&v, UINT64_MAX);
    g = gw_new(3);
    gw_kv_raw(g, "k", TL_META_STRING, v.p, v.len);
    expect_reject(g, TL_ERR_FORMAT, "truncated");
    gw_buf_free(&v);
    /* an array of 2^61 u64 (count * 8 would overflow): beyond the element limit */
    gw_buf_u32(&v, TL_META_U64);
    gw_buf_u64(&v, 1ull << 61);
    g = gw_new(3);
    gw_kv_raw(g, "big", TL_META_ARRAY, v.p, v.len);
    expect_reject(g, TL_ERR_FORMAT, "exceeds GGUF's limit");
    gw_buf_free(&v);
    /* an array of 2^64-1 strings */
    gw_buf_u32(&v, TL_META_STRING);
    gw_buf_u64(&v, UINT64_MAX);
    gw_buf_str(&v, "x");
    g = gw_new(3);
    gw_kv_raw(g, "strs", TL_META_ARRAY, v.p, v.len);
    expect_reject(g, TL_ERR_FORMAT, "exceeds GGUF's limit");
    gw_buf_free(&v);
    /* a dimension above INT64_MAX, and a product that overflows */
    g = gw_new(3);
    int64_t big[1] = {-1}; /* written as u64 2^64-1 */
    gw_tensor(g, "t", TL_DTYPE_F32, 1, big);
    gw_tensor_nbytes(g, 0, 32);
    expect_reject(g, TL_ERR_FORMAT, "too large");
    g = gw_new(3);
    int64_t prod[4] = {1ll << 40, 1ll << 40, 1, 1};
    gw_tensor(g, "t", TL_DTYPE_F32, 4, prod);
    gw_tensor_nbytes(g, 0, 32);
    expect_reject(g, TL_ERR_FORMAT, "overflows");
    g = gw_new(3);
    int64_t bytes_over[2] = {1ll << 40, 1ll << 22}; /* 2^62 elements of f64: bytes overflow */
    gw_tensor(g, "t", TL_DTYPE_F64, 2, bytes_over);
    gw_tensor_nbytes(g, 0, 32);
    expect_reject(g, TL_ERR_FORMAT, "'t'");
}

static void test_type_ids(void **state) {
    (void)state;
    gw_gguf *g = gw_new(3);
    gw_kv_raw(g, "weird", 13, "\0", 1);
    expect_reject(g, TL_ERR_FORMAT, "'weird' has unknown value type 13");
    g = gw_new(3);
    gw_buf v = {0};
    gw_buf_u32(&v, 77);
    gw_buf_u64(&v, 1);
    gw_kv_raw(g, "arr", TL_META_ARRAY, v.p, v.len);
    gw_buf_free(&v);
    expect_reject(g, TL_ERR_FORMAT, "'arr' has unknown value type 77");
    uint32_t bad_ids[] = {TL_GGML_TYPE_COUNT, 1000, 0xFFFFFFFFu};
    for (size_t i = 0; i < 3; i++) {
        g = gw_new(3);
        int64_t ne[1] = {32};
        gw_tensor(g, "odd.weight", bad_ids[i], 1, ne);
        gw_tensor_nbytes(g, 0, 64);
        expect_reject(g, TL_ERR_FORMAT, "'odd.weight' has unknown ggml type id");
    }
    g = gw_new(3);
    int64_t ne[1] = {32};
    gw_tensor(g, "old.weight", 4, 1, ne);
    gw_tensor_nbytes(g, 0, 64);
    expect_reject(g, TL_ERR_UNSUPPORTED, "Q4_2");
    g = gw_new(3);
    int64_t ne2[2] = {33, 2}; /* not a multiple of Q4_0's 32 */
    gw_tensor(g, "rows.weight", TL_DTYPE_Q4_0, 2, ne2);
    gw_tensor_nbytes(g, 0, 64);
    expect_reject(g, TL_ERR_FORMAT, "'rows.weight': row length 33");
}

static void test_alignment_rules(void **state) {
    (void)state;
    gw_gguf *g = one_tensor(3);
    gw_tensor_offset(g, 0, 16); /* alignment is 32 */
    expect_reject(g, TL_ERR_FORMAT, "not a multiple of the alignment");
    uint32_t bad[] = {0, 3, 48, 0x80000001u};
    for (size_t i = 0; i < 4; i++) {
        g = gw_new(3);
        gw_kv_u32(g, "general.alignment", bad[i]);
        expect_reject(g, TL_ERR_FORMAT, "not a power of two");
    }
    g = gw_new(3);
    gw_kv_u64(g, "general.alignment", 32);
    expect_reject(g, TL_ERR_FORMAT, "must be uint32");
    /* a valid non-default alignment is honoured */
    g = one_tensor(3);
    gw_kv_u32(g, "general.alignment", 256);
    size_t len;
    uint8_t *img = gw_build(g, &len);
    tl__fmt_file f;
    assert_int_equal(parse(img, len, &f), TL_OK);
    assert_int_equal(f.alignment, 256);
    assert_int_equal(f.data_offset % 256, 0);
    tl__fmt_file_free(&f);
    free(img);
    gw_free(g);
}

static void expect_accept(gw_gguf *g) {
    size_t len;
    uint8_t *img = gw_build(g, &len);
    tl__fmt_file f;
    if (parse(img, len, &f)) fail_msg("%s", tl_last_error());
    tl__fmt_file_free(&f);
    free(img);
    gw_free(g);
}

static void test_ggml_limits(void **state) {
    (void)state;
    gw_gguf *g = one_tensor(3);
    gw_kv_str(g, "", "v");
    expect_reject(g, TL_ERR_FORMAT, "is empty");
    /* names: stable-diffusion.cpp builds ggml with GGML_MAX_NAME=160 (its CMakeLists.txt), and
     * ggml's gguf reader refuses names of GGML_MAX_NAME bytes or more: 159 loads, 160 does not.
     * 63/64 and 127/128 are stock ggml's and the former limit's edges. */
    static const size_t ok_lens[] = {1, 63, 64, 127, 128, 159};
    char name[161];
    int64_t ne[1] = {32};
    for (size_t i = 0; i < sizeof ok_lens / sizeof ok_lens[0]; i++) {
        memset(name, 'n', ok_lens[i]);
        name[ok_lens[i]] = 0;
        g = gw_new(3);
        gw_tensor(g, name, TL_DTYPE_F32, 1, ne);
        expect_accept(g);
    }
    memset(name, 'n', 160);
    name[160] = 0;
    g = gw_new(3);
    gw_tensor(g, name, TL_DTYPE_F32, 1, ne);
    expect_reject(g, TL_ERR_FORMAT, "name of 160 bytes is longer than 159");
    /* alignment: 1 MiB is ggml's maximum */
    g = one_tensor(3);
    gw_kv_u32(g, "general.alignment", 1u << 20);
    expect_accept(g);
    g = gw_new(3);
    gw_kv_u32(g, "general.alignment", 1u << 21);
    expect_reject(g, TL_ERR_FORMAT, "exceeds 1 MiB");
    /* a 64 MiB + 1 string (as key, value and array element), a 2^26 + 1 element array */
    size_t big = (64u << 20) + 1;
    char *s = malloc(big + 1);
    memset(s, 'a', big);
    s[big] = 0;
    g = gw_new(3);
    gw_kv_str(g, "k", s);
    expect_reject(g, TL_ERR_FORMAT, "64 MiB string limit");
    g = gw_new(3);
    gw_kv_str(g, s, "v");
    expect_reject(g, TL_ERR_FORMAT, "64 MiB string limit");
    const char *strs[] = {"x", s};
    g = gw_new(3);
    gw_kv_str_array(g, "toks", strs, 2);
    expect_reject(g, TL_ERR_FORMAT, "64 MiB string limit");
    s[big - 1] = 0; /* exactly 64 MiB: accepted */
    g = gw_new(3);
    gw_kv_str(g, "k", s);
    expect_accept(g);
    g = gw_new(3);
    gw_kv_array(g, "bytes", TL_META_U8, big, s);
    expect_reject(g, TL_ERR_FORMAT, "array of 67108865 elements");
    free(s);
}

static void test_duplicates_nesting_overlap_and_bounds(void **state) {
    (void)state;
    gw_gguf *g = one_tensor(3);
    int64_t ne[1] = {32};
    gw_tensor(g, "blk.0.attn_q.weight", TL_DTYPE_F32, 1, ne);
    expect_reject(g, TL_ERR_FORMAT, "duplicate tensor name 'blk.0.attn_q.weight'");
    g = one_tensor(3);
    gw_kv_str(g, "general.architecture", "again");
    expect_reject(g, TL_ERR_FORMAT, "duplicate metadata key 'general.architecture'");
    /* nesting: 8 levels parse, 9 do not */
    for (int depth = 8; depth <= 9; depth++) {
        gw_buf v = {0};
        for (int d = 1; d < depth; d++) {
            gw_buf_u32(&v, TL_META_ARRAY);
            gw_buf_u64(&v, 1);
        }
        gw_buf_u32(&v, TL_META_U8);
        gw_buf_u64(&v, 1);
        gw_buf_u8(&v, 7);
        g = gw_new(3);
        gw_kv_raw(g, "deep", TL_META_ARRAY, v.p, v.len);
        gw_buf_free(&v);
        if (depth == 9) {
            expect_reject(g, TL_ERR_FORMAT, "nested deeper than 8");
        } else {
            size_t len;
            uint8_t *img = gw_build(g, &len);
            tl__fmt_file f;
            assert_int_equal(parse(img, len, &f), TL_OK);
            assert_int_equal(f.meta[0].m.depth, 8);
            tl__fmt_file_free(&f);
            free(img);
            gw_free(g);
        }
    }
    /* overlapping tensors */
    g = gw_new(3);
    gw_tensor(g, "a", TL_DTYPE_F32, 1, (int64_t[]){64});
    gw_tensor(g, "b", TL_DTYPE_F32, 1, (int64_t[]){64});
    gw_tensor_offset(g, 1, 128);
    expect_reject(g, TL_ERR_FORMAT, "overlaps");
    /* data past the end of the file */
    g = one_tensor(3);
    gw_set_no_data(g, true);
    expect_reject(g, TL_ERR_FORMAT, "'blk.0.attn_q.weight': data");
    g = one_tensor(3);
    gw_tensor_offset(g, 0, 1ull << 62);
    expect_reject(g, TL_ERR_FORMAT, "runs past the end");
    /* too many dimensions, NUL in a name */
    g = gw_new(3);
    gw_tensor(g, "five", TL_DTYPE_F32, 5, (int64_t[]){1, 1, 1, 1, 1});
    expect_reject(g, TL_ERR_FORMAT, "'five' has 5 dimensions");
    g = gw_new(3);
    gw_buf v = {0};
    gw_buf_strn(&v, "a\0b", 3);
    gw_buf_u32(&v, 1);
    gw_buf_u64(&v, 32);
    gw_buf_u32(&v, TL_DTYPE_F32);
    gw_buf_u64(&v, 0);
    /* hand-made tensor info: counts say one tensor, bytes are ours */
    gw_kv_raw(g, "pad", TL_META_U8, "\0", 1);
    gw_set_counts(g, 0, 1);
    size_t len;
    uint8_t *base = gw_build(g, &len);
    gw_free(g);
    /* rewrite: header (24 bytes) + kv, then append the tensor info */
    uint8_t *img = malloc(len + v.len + 64);
    memcpy(img, base, 24);
    uint64_t one = 1;
    memcpy(img + 8, &one, 8);
    size_t kv_len = 8 + 3 + 4 + 1;
    memcpy(img + 24, base + 24, kv_len);
    memcpy(img + 24 + kv_len, v.p, v.len);
    tl__fmt_file f;
    assert_int_equal(parse(img, 24 + kv_len + v.len + 64, &f), TL_ERR_FORMAT);
    assert_non_null(strstr(tl_last_error(), "NUL"));
    free(img);
    free(base);
    gw_buf_free(&v);
}

static void test_header_basics(void **state) {
    (void)state;
    gw_gguf *g = one_tensor(3);
    gw_set_magic(g, "GGUG");
    expect_reject(g, TL_ERR_FORMAT, "bad magic");
    g = one_tensor(1);
    expect_reject(g, TL_ERR_UNSUPPORTED, "version 1");
    g = one_tensor(4);
    expect_reject(g, TL_ERR_FORMAT, "unknown GGUF version 4");
    g = one_tensor(0x03000000u);
    expect_reject(g, TL_ERR_UNSUPPORTED, "big-endian");
    /* trailing bytes after the data are allowed in GGUF (ggml allows them too) */
    g = one_tensor(2);
    gw_set_tail(g, 100);
    size_t len;
    uint8_t *img = gw_build(g, &len);
    tl__fmt_file f;
    assert_int_equal(parse(img, len, &f), TL_OK);
    assert_int_equal(f.version, 2);
    tl__fmt_file_free(&f);
    free(img);
    gw_free(g);
}

static void test_through_the_catalog(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *p = tu_path(dir, "broken.gguf");
    gw_gguf *g = one_tensor(3);
    gw_tensor_offset(g, 0, 1ull << 40);
    assert_true(gw_write_file(g, p));
    gw_free(g);
    tu_run r = tu_cli_run("info", p, NULL);
    assert_int_equal(r.status, 3);
    assert_non_null(strstr(r.err, p));
    assert_non_null(strstr(r.err, "blk.0.attn_q.weight"));
    assert_string_equal(r.out, "");
    tu_run_free(&r);
    g = one_tensor(3);
    assert_true(gw_write_file(g, p));
    gw_free(g);
    r = tu_cli_run("info", "--json", p, NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "\"dtype\":\"Q8_0\",\"shape\":[3,64]"));
    assert_non_null(strstr(r.out, "\"component\":\"other\",\"layer\":0"));
    tu_run_free(&r);
    free(p);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_metadata_type_reads_back),
        cmocka_unit_test(test_every_ggml_type_is_exact),
        cmocka_unit_test(test_truncation_at_every_byte),
        cmocka_unit_test(test_counts_near_2_64),
        cmocka_unit_test(test_type_ids),
        cmocka_unit_test(test_alignment_rules),
        cmocka_unit_test(test_ggml_limits),
        cmocka_unit_test(test_duplicates_nesting_overlap_and_bounds),
        cmocka_unit_test(test_header_basics),
        cmocka_unit_test(test_through_the_catalog),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
