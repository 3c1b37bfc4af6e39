/*
 * gguf_writer.c — in-memory GGUF image builder for tests (see gguf_writer.h):
 * the header comes from the library's writer (format/writer.c, with its
 * knobs for broken files); sizes come from the tests' own type table
 * (dtype_spec.c); the data section is filled here.
 */
#include "gguf_writer.h"

#include "dtype_spec.h"
#include "format/writer.h"
#include "tierload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "gguf_writer: out of memory\n");
        abort();
    }
    return q;
}

void gw_buf_bytes(gw_buf *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
}

void gw_buf_u8(gw_buf *b, uint8_t v) {
    gw_buf_bytes(b, &v, 1);
}

void gw_buf_u32(gw_buf *b, uint32_t v) {
    uint8_t le[4];
    for (int i = 0; i < 4; i++)
        le[i] = (uint8_t)(v >> (8 * i));
    gw_buf_bytes(b, le, 4);
}

void gw_buf_u64(gw_buf *b, uint64_t v) {
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(v >> (8 * i));
    gw_buf_bytes(b, le, 8);
}

void gw_buf_strn(gw_buf *b, const char *s, uint64_t n) {
    gw_buf_u64(b, n);
    gw_buf_bytes(b, s, (size_t)n);
}

void gw_buf_str(gw_buf *b, const char *s) {
    gw_buf_strn(b, s, strlen(s));
}

void gw_buf_zero(gw_buf *b, size_t n) {
    static const uint8_t z[64];
    while (n) {
        size_t k = n < sizeof z ? n : sizeof z;
        gw_buf_bytes(b, z, k);
        n -= k;
    }
}

void gw_buf_free(gw_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

typedef struct gw_tensor_rec {
    uint64_t nbytes; /* as the writer has it */
    uint8_t *data;   /* optional caller data */
    size_t data_len;
} gw_tensor_rec;

struct gw_gguf {
    tl_writer *w;
    gw_tensor_rec *t;
    size_t n_t, cap_t;
    size_t tail;
    bool no_data;
    uint64_t data_offset; /* after gw_build */
};

static void must(tl_status s) {
    if (s != TL_OK) {
        fprintf(stderr, "gguf_writer: %s\n", tl_last_error());
        abort();
    }
}

gw_gguf *gw_new(uint32_t version) {
    gw_gguf *g = xrealloc(NULL, sizeof *g);
    memset(g, 0, sizeof *g);
    must(tl_writer_create(TL_FORMAT_GGUF, &g->w));
    tl__writer_set_version(g->w, version);
    return g;
}

void gw_free(gw_gguf *g) {
    if (!g) return;
    for (size_t i = 0; i < g->n_t; i++)
        free(g->t[i].data);
    free(g->t);
    tl_writer_destroy(g->w);
    free(g);
}

void gw_kv_raw(gw_gguf *g, const char *key, uint32_t type, const void *value, size_t n) {
    must(tl_writer_meta_raw(g->w, key, (tl_meta_type)type, value, n));
}

static void kv_le(gw_gguf *g, const char *key, uint32_t type, uint64_t v, unsigned size) {
    uint8_t le[8];
    for (unsigned i = 0; i < size; i++)
        le[i] = (uint8_t)(v >> (8 * i));
    gw_kv_raw(g, key, type, le, size);
}

void gw_kv_u8(gw_gguf *g, const char *key, uint8_t v) {
    kv_le(g, key, TL_META_U8, v, 1);
}
void gw_kv_i8(gw_gguf *g, const char *key, int8_t v) {
    kv_le(g, key, TL_META_I8, (uint8_t)v, 1);
}
void gw_kv_u16(gw_gguf *g, const char *key, uint16_t v) {
    kv_le(g, key, TL_META_U16, v, 2);
}
void gw_kv_i16(gw_gguf *g, const char *key, int16_t v) {
    kv_le(g, key, TL_META_I16, (uint16_t)v, 2);
}
void gw_kv_u32(gw_gguf *g, const char *key, uint32_t v) {
    must(tl_writer_meta_u32(g->w, key, v)); /* general.alignment also sets the layout */
}
void gw_kv_i32(gw_gguf *g, const char *key, int32_t v) {
    kv_le(g, key, TL_META_I32, (uint32_t)v, 4);
}
void gw_kv_f32(gw_gguf *g, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    kv_le(g, key, TL_META_F32, u, 4);
}
void gw_kv_bool(gw_gguf *g, const char *key, bool v) {
    kv_le(g, key, TL_META_BOOL, v ? 1 : 0, 1);
}
void gw_kv_str(gw_gguf *g, const char *key, const char *v) {
    must(tl_writer_meta_string(g->w, key, v));
}
void gw_kv_u64(gw_gguf *g, const char *key, uint64_t v) {
    kv_le(g, key, TL_META_U64, v, 8);
}
void gw_kv_i64(gw_gguf *g, const char *key, int64_t v) {
    kv_le(g, key, TL_META_I64, (uint64_t)v, 8);
}
void gw_kv_f64(gw_gguf *g, const char *key, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    kv_le(g, key, TL_META_F64, u, 8);
}

/* Bytes of one value of a fixed-size GGUF metadata type, from the GGUF spec. */
static size_t scalar_size(uint32_t type) {
    static const size_t size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return type < sizeof size / sizeof size[0] ? size[type] : 0;
}

void gw_kv_array(gw_gguf *g, const char *key, uint32_t elem_type, uint64_t n, const void *elems) {
    gw_buf v = {0};
    gw_buf_u32(&v, elem_type);
    gw_buf_u64(&v, n);
    /* Host order is little-endian on every platform the tests run on. */
    gw_buf_bytes(&v, elems, (size_t)(n * scalar_size(elem_type)));
    gw_kv_raw(g, key, TL_META_ARRAY, v.p, v.len);
    gw_buf_free(&v);
}

void gw_kv_str_array(gw_gguf *g, const char *key, const char *const *strs, size_t n) {
    gw_buf v = {0};
    gw_buf_u32(&v, TL_META_STRING);
    gw_buf_u64(&v, n);
    for (size_t i = 0; i < n; i++)
        gw_buf_str(&v, strs[i]);
    gw_kv_raw(g, key, TL_META_ARRAY, v.p, v.len);
    gw_buf_free(&v);
}

void gw_kv_nested_u32(gw_gguf *g, const char *key, uint32_t n_outer) {
    gw_buf v = {0};
    gw_buf_u32(&v, TL_META_ARRAY);
    gw_buf_u64(&v, n_outer);
    for (uint32_t k = 0; k < n_outer; k++) {
        gw_buf_u32(&v, TL_META_U32);
        gw_buf_u64(&v, k + 1);
        for (uint32_t j = 0; j <= k; j++)
            gw_buf_u32(&v, 100 * k + j);
    }
    gw_kv_raw(g, key, TL_META_ARRAY, v.p, v.len);
    gw_buf_free(&v);
}

size_t gw_tensor(gw_gguf *g, const char *name, uint32_t type, uint32_t n_dims, const int64_t *ne) {
    if (g->n_t == g->cap_t) {
        g->cap_t = g->cap_t ? 2 * g->cap_t : 16;
        g->t = xrealloc(g->t, g->cap_t * sizeof *g->t);
    }
    memset(&g->t[g->n_t], 0, sizeof g->t[g->n_t]);
    uint32_t nd = n_dims > 8 ? 8 : n_dims;
    int64_t shape[8];
    uint64_t n = 1, nbytes = 0;
    bool ok = true;
    for (uint32_t d = 0; d < nd; d++) {
        shape[nd - 1 - d] = ne[d]; /* the writer takes outermost first */
        if (ne[d] < 0 || __builtin_mul_overflow(n, (uint64_t)ne[d], &n)) ok = false;
    }
    if (!ok || !tu_dtype_nbytes(tu_dtype_spec_of((int)type), n, &nbytes)) nbytes = 0;
    size_t i;
    must(tl_writer_tensor(g->w, name, (tl_dtype)type, nd, shape, nbytes, &i));
    g->t[g->n_t++].nbytes = nbytes;
    return i;
}

void gw_tensor_offset(gw_gguf *g, size_t i, uint64_t rel_offset) {
    tl__writer_set_tensor_offset(g->w, i, rel_offset);
}

void gw_tensor_nbytes(gw_gguf *g, size_t i, uint64_t nbytes) {
    tl__writer_set_tensor_nbytes(g->w, i, nbytes);
    g->t[i].nbytes = nbytes;
}

void gw_tensor_data(gw_gguf *g, size_t i, const void *data, size_t len) {
    gw_tensor_rec *t = &g->t[i];
    free(t->data);
    t->data = xrealloc(NULL, len);
    memcpy(t->data, data, len);
    t->data_len = len;
}

void gw_set_magic(gw_gguf *g, const char magic[4]) {
    tl__writer_set_magic(g->w, magic);
}

void gw_set_counts(gw_gguf *g, uint64_t n_tensors, uint64_t n_kv) {
    tl__writer_set_counts(g->w, n_tensors, n_kv);
}

void gw_set_layout_alignment(gw_gguf *g, uint32_t align) {
    tl__writer_set_layout_alignment(g->w, align);
}
void gw_set_tail(gw_gguf *g, size_t n) {
    g->tail = n;
}
void gw_set_no_data(gw_gguf *g, bool on) {
    g->no_data = on;
}

uint8_t gw_pattern_byte(size_t i, uint64_t k) {
    return (uint8_t)((i * 131u + k * 7u + (k >> 8)) & 0xffu);
}

/* Data sections are capped (explicit offsets far out stay outside the file). */
#define GW_MAX_DATA (64ull << 20)

uint8_t *gw_build(gw_gguf *g, size_t *len) {
    const void *hdr;
    size_t hlen;
    must(tl_writer_header(g->w, &hdr, &hlen));
    gw_buf b = {0};
    gw_buf_bytes(&b, hdr, hlen);
    g->data_offset = b.len;
    if (!g->no_data && g->n_t) {
        /* The data section ends padded, as llama.cpp writes it. */
        uint64_t size = tl_writer_data_size(g->w);
        if (size > GW_MAX_DATA) size = GW_MAX_DATA;
        gw_buf_zero(&b, (size_t)size);
        uint8_t *base = b.p + g->data_offset;
        for (size_t i = 0; i < g->n_t; i++) {
            uint64_t off = tl_writer_tensor_offset(g->w, i);
            if (off >= size) continue;
            uint64_t n = gw_tensor_size(g, i);
            if (n > size - off) n = size - off;
            for (uint64_t k = 0; k < n; k++)
                base[off + k] = gw_pattern_byte(i, k);
            if (g->t[i].data)
                memcpy(base + off, g->t[i].data,
                       g->t[i].data_len < n ? g->t[i].data_len : (size_t)n);
        }
    }
    for (size_t k = 0; k < g->tail; k++)
        gw_buf_u8(&b, 0xEE);
    *len = b.len;
    if (!b.p) b.p = xrealloc(NULL, 1);
    return b.p;
}

bool gw_write_file(gw_gguf *g, const char *path) {
    size_t len;
    uint8_t *img = gw_build(g, &len);
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(img, 1, len, f) == len;
    if (f && fclose(f) != 0) ok = false;
    free(img);
    return ok;
}

uint64_t gw_data_offset(const gw_gguf *g) {
    return g->data_offset;
}
uint64_t gw_tensor_abs_offset(const gw_gguf *g, size_t i) {
    return g->data_offset + tl_writer_tensor_offset(g->w, i);
}
size_t gw_tensor_count(const gw_gguf *g) {
    return g->n_t;
}
uint64_t gw_tensor_size(const gw_gguf *g, size_t i) {
    return g->t[i].nbytes;
}
