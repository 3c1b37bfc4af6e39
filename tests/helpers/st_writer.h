/*
 * st_writer.h — builds safetensors images in memory for tests (and fuzz seeds).
 *
 * Two ways:
 *
 *   - from a tensor list: sw_build() writes the JSON header itself
 *     ({"__metadata__":{...},"name":{"dtype":..,"shape":[..],"data_offsets":[b,e]},...}),
 *     tensors back to back in list order, sizes from dtype and shape
 *     (the tests' own table, dtype_spec.h), data bytes a deterministic pattern (sw_pattern_byte);
 *
 *         sw_tensor ts[] = {{"a.weight", "F16", 2, {3, 4}}, {"a.bias", "F32", 1, {4}}};
 *         size_t len;
 *         uint8_t *img = sw_build(ts, 2, "{\"format\":\"pt\"}", true, &len);
 *
 *   - from header text: sw_build_raw() takes the JSON verbatim plus the data
 *     bytes, for malformed headers and hand-written cases.
 *
 * With pad8 the header is padded with spaces so that the data starts at a
 * multiple of 8 (what the reference writer does); without it the header is
 * written as is (data may start unaligned, as in some sample files).
 * Every function returns a malloc'd image (free() it); allocation failures abort.
 */
#ifndef TL_TEST_ST_WRITER_H
#define TL_TEST_ST_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sw_tensor {
    const char *name;
    const char *dtype; /* safetensors dtype name: "F32", "BF16", "F8_E4M3", "F4", ... */
    uint32_t n_dims;
    int64_t shape[8]; /* outermost first */
} sw_tensor;

/*
 * Image from a tensor list; metadata_json is the text of the __metadata__
 * object ("{\"k\":\"v\"}") or NULL for none. *len gets the size. Tensors whose
 * size cannot be computed get 0 bytes.
 */
uint8_t *sw_build(const sw_tensor *t, size_t n, const char *metadata_json, bool pad8, size_t *len);
/* Image from header text and data (data may be NULL when data_len is 0). */
uint8_t *sw_build_raw(const char *header_json, const void *data, size_t data_len, bool pad8,
                      size_t *len);
/* Absolute offset of the data section of an image built by either function. */
uint64_t sw_data_offset(const uint8_t *img);
/* Byte k of tensor i's data in sw_build images. */
uint8_t sw_pattern_byte(size_t i, uint64_t k);
/* Write an image to a file; false on I/O error. */
bool sw_write_file(const char *path, const uint8_t *img, size_t len);

#endif
