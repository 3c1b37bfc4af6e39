/*
 * gguf_writer.c — in-memory GGUF image builder for tests (see gguf_writer.h).
 */
#include "gguf_writer.h"

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
    char *name;
    uint32_t type;
    uint32_t n_dims;
    int64_t ne[8];
    uint64_t nbytes;
    bool explicit_off;
    uint64_t rel_off; /* explicit, or computed by gw_build */
    uint8_t *data;    /* optional caller data */
    size_t data_len;
} gw_tensor_rec;

struct gw_gguf {
    char magic[4];
    uint32_t version;
    gw_buf kvs; /* encoded kv section */
    uint64_t n_kv;
    gw_tensor_rec *t;
    size_t n_t, cap_t;
    uint32_t align;        /* from general.alignment (default 32) */
    uint32_t layout_align; /* 0: use align */
    bool counts_set;
    uint64_t w_n_tensors, w_n_kv;
    size_t tail;
    bool no_data;
    uint64_t data_offset; /* after gw_build */
};

gw_gguf *gw_new(uint32_t version) {
    gw_gguf *g = xrealloc(NULL, sizeof *g);
    memset(g, 0, sizeof *g);
    memcpy(g->magic, "GGUF", 4);
    g->version = version;
    g->align = 32;
    return g;
}

void gw_free(gw_gguf *g) {
    if (!g) return;
    for (size_t i = 0; i < g->n_t; i++) {
        free(g->t[i].name);
        free(g->t[i].data);
    }
    free(g->t);
    gw_buf_free(&g->kvs);
    free(g);
}

static void kv_head(gw_gguf *g, const char *key, uint32_t type) {
    gw_buf_str(&g->kvs, key);
    gw_buf_u32(&g->kvs, type);
    g->n_kv++;
}

void gw_kv_raw(gw_gguf *g, const char *key, uint32_t type, const void *value, size_t n) {
    kv_head(g, key, type);
    gw_buf_bytes(&g->kvs, value, n);
}

void gw_kv_u8(gw_gguf *g, const char *key, uint8_t v) {
    kv_head(g, key, TL_META_U8);
    gw_buf_u8(&g->kvs, v);
}
void gw_kv_i8(gw_gguf *g, const char *key, int8_t v) {
    kv_head(g, key, TL_META_I8);
    gw_buf_u8(&g->kvs, (uint8_t)v);
}
void gw_kv_u16(gw_gguf *g, const char *key, uint16_t v) {
    kv_head(g, key, TL_META_U16);
    gw_buf_u8(&g->kvs, (uint8_t)v);
    gw_buf_u8(&g->kvs, (uint8_t)(v >> 8));
}
void gw_kv_i16(gw_gguf *g, const char *key, int16_t v) {
    kv_head(g, key, TL_META_I16);
    gw_buf_u8(&g->kvs, (uint8_t)(uint16_t)v);
    gw_buf_u8(&g->kvs, (uint8_t)((uint16_t)v >> 8));
}
void gw_kv_u32(gw_gguf *g, const char *key, uint32_t v) {
    kv_head(g, key, TL_META_U32);
    gw_buf_u32(&g->kvs, v);
    if (!strcmp(key, "general.alignment") && v && !(v & (v - 1))) g->align = v;
}
void gw_kv_i32(gw_gguf *g, const char *key, int32_t v) {
    kv_head(g, key, TL_META_I32);
    gw_buf_u32(&g->kvs, (uint32_t)v);
}
void gw_kv_f32(gw_gguf *g, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    kv_head(g, key, TL_META_F32);
    gw_buf_u32(&g->kvs, u);
}
void gw_kv_bool(gw_gguf *g, const char *key, bool v) {
    kv_head(g, key, TL_META_BOOL);
    gw_buf_u8(&g->kvs, v ? 1 : 0);
}
void gw_kv_str(gw_gguf *g, const char *key, const char *v) {
    kv_head(g, key, TL_META_STRING);
    gw_buf_str(&g->kvs, v);
}
void gw_kv_u64(gw_gguf *g, const char *key, uint64_t v) {
    kv_head(g, key, TL_META_U64);
    gw_buf_u64(&g->kvs, v);
}
void gw_kv_i64(gw_gguf *g, const char *key, int64_t v) {
    kv_head(g, key, TL_META_I64);
    gw_buf_u64(&g->kvs, (uint64_t)v);
}
void gw_kv_f64(gw_gguf *g, const char *key, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    kv_head(g, key, TL_META_F64);
    gw_buf_u64(&g->kvs, u);
}

static size_t scalar_size(uint32_t type) {
    return (unsigned)type <= TL_META_F64 ? tl_meta_type_size((tl_meta_type)type) : 0;
}

void gw_kv_array(gw_gguf *g, const char *key, uint32_t elem_type, uint64_t n, const void *elems) {
    kv_head(g, key, TL_META_ARRAY);
    gw_buf_u32(&g->kvs, elem_type);
    gw_buf_u64(&g->kvs, n);
    /* Host order is little-endian on every platform the tests run on. */
    gw_buf_bytes(&g->kvs, elems, (size_t)(n * scalar_size(elem_type)));
}

void gw_kv_str_array(gw_gguf *g, const char *key, const char *const *strs, size_t n) {
    kv_head(g, key, TL_META_ARRAY);
    gw_buf_u32(&g->kvs, TL_META_STRING);
    gw_buf_u64(&g->kvs, n);
    for (size_t i = 0; i < n; i++)
        gw_buf_str(&g->kvs, strs[i]);
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
    gw_tensor_rec *t = &g->t[g->n_t];
    memset(t, 0, sizeof *t);
    size_t nl = strlen(name);
    t->name = xrealloc(NULL, nl + 1);
    memcpy(t->name, name, nl + 1);
    t->type = type;
    t->n_dims = n_dims > 8 ? 8 : n_dims;
    uint64_t n = 1;
    bool ok = true;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        t->ne[d] = ne[d];
        if (ne[d] < 0 || __builtin_mul_overflow(n, (uint64_t)ne[d], &n)) ok = false;
    }
    if (!ok || !tl_dtype_name((tl_dtype)type) || !tl_dtype_nbytes((tl_dtype)type, n, &t->nbytes))
        t->nbytes = 0;
    return g->n_t++;
}

void gw_tensor_offset(gw_gguf *g, size_t i, uint64_t rel_offset) {
    g->t[i].explicit_off = true;
    g->t[i].rel_off = rel_offset;
}

void gw_tensor_nbytes(gw_gguf *g, size_t i, uint64_t nbytes) {
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
    memcpy(g->magic, magic, 4);
}

void gw_set_counts(gw_gguf *g, uint64_t n_tensors, uint64_t n_kv) {
    g->counts_set = true;
    g->w_n_tensors = n_tensors;
    g->w_n_kv = n_kv;
}

void gw_set_layout_alignment(gw_gguf *g, uint32_t align) {
    g->layout_align = align;
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

static uint64_t pad_to(uint64_t x, uint64_t a) {
    if (!a || x > UINT64_MAX - a) return x;
    return (x + a - 1) / a * a;
}

uint8_t *gw_build(gw_gguf *g, size_t *len) {
    uint64_t a = g->layout_align ? g->layout_align : g->align;
    gw_buf b = {0};
    gw_buf_bytes(&b, g->magic, 4);
    gw_buf_u32(&b, g->version);
    gw_buf_u64(&b, g->counts_set ? g->w_n_tensors : g->n_t);
    gw_buf_u64(&b, g->counts_set ? g->w_n_kv : g->n_kv);
    gw_buf_bytes(&b, g->kvs.p, g->kvs.len);
    /* Packed offsets: each tensor at the running end, padded to the alignment. */
    uint64_t run = 0, data_end = 0;
    for (size_t i = 0; i < g->n_t; i++) {
        gw_tensor_rec *t = &g->t[i];
        if (!t->explicit_off) t->rel_off = run;
        uint64_t end;
        if (__builtin_add_overflow(t->rel_off, t->nbytes, &end)) end = UINT64_MAX;
        run = pad_to(end, a);
        if (end > data_end) data_end = end;
    }
    if (data_end > GW_MAX_DATA) data_end = GW_MAX_DATA;
    for (size_t i = 0; i < g->n_t; i++) {
        const gw_tensor_rec *t = &g->t[i];
        gw_buf_str(&b, t->name);
        gw_buf_u32(&b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            gw_buf_u64(&b, (uint64_t)t->ne[d]);
        gw_buf_u32(&b, t->type);
        gw_buf_u64(&b, t->rel_off);
    }
    gw_buf_zero(&b, (size_t)(pad_to(b.len, a) - b.len));
    g->data_offset = b.len;
    if (!g->no_data && g->n_t) {
        /* The data section ends padded, as llama.cpp writes it. */
        uint64_t size = pad_to(data_end, a);
        gw_buf_zero(&b, (size_t)size);
        uint8_t *base = b.p + g->data_offset;
        for (size_t i = 0; i < g->n_t; i++) {
            const gw_tensor_rec *t = &g->t[i];
            if (t->rel_off >= size) continue;
            uint64_t n = t->nbytes;
            if (n > size - t->rel_off) n = size - t->rel_off;
            for (uint64_t k = 0; k < n; k++)
                base[t->rel_off + k] = gw_pattern_byte(i, k);
            if (t->data)
                memcpy(base + t->rel_off, t->data, t->data_len < n ? t->data_len : (size_t)n);
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
    return g->data_offset + g->t[i].rel_off;
}
uint64_t gw_tensor_size(const gw_gguf *g, size_t i) {
    return g->t[i].nbytes;
}
size_t gw_tensor_count(const gw_gguf *g) {
    return g->n_t;
}
