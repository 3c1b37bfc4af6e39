/*
 * test_load_st.h — writing safetensors files for the load tests: tensors of
 * any plain dtype with caller-given bytes, flushed to disk (fsync) so that
 * page-cache eviction can take effect.
 */
#ifndef TL_TEST_LOAD_ST_H
#define TL_TEST_LOAD_ST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct st_tensor {
    const char *name;
    const char *dtype; /* safetensors name: F16, BF16, F32, F64, I64, F8_E4M3, F8_E5M2, U8 */
    uint64_t n;        /* elements (1-D) */
    unsigned esize;    /* bytes per element */
    const void *data;  /* n * esize bytes, or NULL for a pattern from fill */
    void (*fill)(void *buf, uint64_t off, uint64_t len, void *ctx); /* streamed filler */
    void *ctx;
} st_tensor;

/* Write the file; tensors are laid out back to back in order (odd sizes give unaligned offsets). */
static inline void st_write(const char *path, const st_tensor *t, size_t n) {
    size_t cap = 4096 + n * 256;
    char *hdr = malloc(cap);
    size_t h = 0;
    uint64_t off = 0;
    h += (size_t)snprintf(hdr + h, cap - h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < n; i++) {
        uint64_t nb = t[i].n * t[i].esize;
        h += (size_t)snprintf(
            hdr + h, cap - h,
            ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu],\"data_offsets\":[%llu,%llu]}", t[i].name,
            t[i].dtype, (unsigned long long)t[i].n, (unsigned long long)off,
            (unsigned long long)(off + nb));
        off += nb;
    }
    h += (size_t)snprintf(hdr + h, cap - h, "}");
    while (h % 8)
        hdr[h++] = ' ';
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t hl = h;
    unsigned char le[8];
    for (int b = 0; b < 8; b++)
        le[b] = (unsigned char)(hl >> (8 * b));
    assert_int_equal(fwrite(le, 1, 8, f), 8);
    assert_int_equal(fwrite(hdr, 1, h, f), h);
    enum { CH = 1 << 20 };
    unsigned char *buf = malloc(CH);
    for (size_t i = 0; i < n; i++) {
        uint64_t nb = t[i].n * t[i].esize;
        if (t[i].data) {
            assert_int_equal(fwrite(t[i].data, 1, (size_t)nb, f), nb);
        } else {
            for (uint64_t o = 0; o < nb; o += CH) {
                uint64_t l = nb - o < CH ? nb - o : CH;
                t[i].fill(buf, o, l, t[i].ctx);
                assert_int_equal(fwrite(buf, 1, (size_t)l, f), l);
            }
        }
    }
    free(buf);
    assert_int_equal(fflush(f), 0);
    assert_int_equal(fsync(fileno(f)), 0);
    assert_int_equal(fclose(f), 0);
    free(hdr);
}

#endif
