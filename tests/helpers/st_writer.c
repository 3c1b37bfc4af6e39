/*
 * st_writer.c — in-memory safetensors image builder for tests (see st_writer.h).
 */
#include "st_writer.h"

#include "tierload.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "st_writer: out of memory\n");
        abort();
    }
    return q;
}

static void sb_add(sbuf *b, const void *d, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        sb_add(b, tmp, (size_t)n);
        return;
    }
    char *big = xrealloc(NULL, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_add(b, big, (size_t)n);
    free(big);
}

/* A JSON string literal (names are test-chosen; escape what JSON requires). */
static void sb_json_str(sbuf *b, const char *s) {
    sb_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            sb_add(b, "\\", 1);
            sb_add(b, s, 1);
        } else if (c < 0x20) {
            sb_printf(b, "\\u%04x", c);
        } else {
            sb_add(b, s, 1);
        }
    }
    sb_add(b, "\"", 1);
}

uint8_t sw_pattern_byte(size_t i, uint64_t k) {
    return (uint8_t)((i * 37u + k * 11u + (k >> 8) + 1u) & 0xffu);
}

uint8_t *sw_build_raw(const char *header_json, const void *data, size_t data_len, bool pad8,
                      size_t *len) {
    size_t hn = strlen(header_json);
    size_t padded = pad8 ? (hn + 7) / 8 * 8 : hn;
    size_t total = 8 + padded + data_len;
    uint8_t *img = xrealloc(NULL, total);
    for (int i = 0; i < 8; i++)
        img[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(img + 8, header_json, hn);
    memset(img + 8 + hn, ' ', padded - hn);
    if (data_len) memcpy(img + 8 + padded, data, data_len);
    *len = total;
    return img;
}

uint8_t *sw_build(const sw_tensor *t, size_t n, const char *metadata_json, bool pad8, size_t *len) {
    sbuf h = {0};
    uint64_t *sizes = xrealloc(NULL, (n ? n : 1) * sizeof *sizes);
    uint64_t off = 0;
    sb_add(&h, "{", 1);
    bool first = true;
    if (metadata_json) {
        sb_printf(&h, "\"__metadata__\":%s", metadata_json);
        first = false;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t elems = 1;
        bool ok = true;
        for (uint32_t d = 0; d < t[i].n_dims && d < 8; d++) {
            if (t[i].shape[d] < 0 || __builtin_mul_overflow(elems, (uint64_t)t[i].shape[d], &elems))
                ok = false;
        }
        tl_dtype dt = tl_dtype_from_name(t[i].dtype);
        if (!ok || dt == TL_DTYPE_INVALID || !tl_dtype_nbytes(dt, elems, &sizes[i])) sizes[i] = 0;
        if (!first) sb_add(&h, ",", 1);
        first = false;
        sb_json_str(&h, t[i].name);
        sb_add(&h, ":{\"dtype\":", 10);
        sb_json_str(&h, t[i].dtype);
        sb_add(&h, ",\"shape\":[", 10);
        for (uint32_t d = 0; d < t[i].n_dims && d < 8; d++)
            sb_printf(&h, "%s%" PRId64, d ? "," : "", t[i].shape[d]);
        sb_printf(&h, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, off + sizes[i]);
        off += sizes[i];
    }
    sb_add(&h, "}", 1);
    uint8_t *data = xrealloc(NULL, off ? (size_t)off : 1);
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++)
        for (uint64_t k = 0; k < sizes[i]; k++)
            data[at++] = sw_pattern_byte(i, k);
    uint8_t *img = sw_build_raw(h.p, data, (size_t)off, pad8, len);
    free(data);
    free(sizes);
    free(h.p);
    return img;
}

uint64_t sw_data_offset(const uint8_t *img) {
    uint64_t n = 0;
    for (int i = 0; i < 8; i++)
        n |= (uint64_t)img[i] << (8 * i);
    return 8 + n;
}

bool sw_write_file(const char *path, const uint8_t *img, size_t len) {
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(img, 1, len, f) == len;
    if (f && fclose(f) != 0) ok = false;
    return ok;
}
