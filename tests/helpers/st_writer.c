/*
 * st_writer.c — in-memory safetensors image builder for tests (see
 * st_writer.h): headers from tensor lists come from the library's writer
 * (format/writer.c), sizes from the tests' own type table (dtype_spec.c).
 */
#include "st_writer.h"

#include "dtype_spec.h"
#include "format/writer.h"
#include "tierload.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "st_writer: out of memory\n");
        abort();
    }
    return q;
}

static void die(void) {
    fprintf(stderr, "st_writer: %s\n", tl_last_error());
    abort();
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
    tl_writer *w = NULL;
    if (tl_writer_create(TL_FORMAT_SAFETENSORS, &w) != TL_OK ||
        tl__writer_set_metadata_json(w, metadata_json) != TL_OK)
        die();
    tl__writer_set_header_pad(w, false); /* sw_build_raw pads */
    uint64_t *sizes = xrealloc(NULL, (n ? n : 1) * sizeof *sizes);
    for (size_t i = 0; i < n; i++) {
        uint64_t elems = 1;
        bool ok = true;
        uint32_t nd = t[i].n_dims < 8 ? t[i].n_dims : 8;
        for (uint32_t d = 0; d < nd; d++) {
            if (t[i].shape[d] < 0 || __builtin_mul_overflow(elems, (uint64_t)t[i].shape[d], &elems))
                ok = false;
        }
        if (!ok || !tu_dtype_nbytes(tu_dtype_spec_named(t[i].dtype), elems, &sizes[i]))
            sizes[i] = 0;
        size_t k;
        if (tl_writer_tensor(w, t[i].name, tl_dtype_from_name(t[i].dtype), nd, t[i].shape, sizes[i],
                             &k) != TL_OK ||
            tl__writer_set_dtype_name(w, k, t[i].dtype) != TL_OK)
            die();
    }
    const void *hdr;
    size_t hlen;
    if (tl_writer_header(w, &hdr, &hlen) != TL_OK) die();
    /* the writer's header: u64 length, then the JSON text */
    char *json = xrealloc(NULL, hlen - 8 + 1);
    memcpy(json, (const char *)hdr + 8, hlen - 8);
    json[hlen - 8] = 0;
    uint64_t off = tl_writer_data_size(w);
    uint8_t *data = xrealloc(NULL, off ? (size_t)off : 1);
    for (size_t i = 0; i < n; i++) {
        uint64_t at = tl_writer_tensor_offset(w, i);
        for (uint64_t k = 0; k < sizes[i]; k++)
            data[at + k] = sw_pattern_byte(i, k);
    }
    uint8_t *img = sw_build_raw(json, data, (size_t)off, pad8, len);
    free(json);
    free(data);
    free(sizes);
    tl_writer_destroy(w);
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
