/*
 * gguf_writer.h — builds GGUF images in memory for tests (and fuzz seeds).
 *
 * Usage:
 *
 *     gw_gguf *g = gw_new(3);                       // GGUF version 3 (2 works too)
 *     gw_kv_str(g, "general.architecture", "llama");
 *     gw_kv_u32(g, "general.alignment", 64);        // also sets the layout alignment
 *     const char *toks[] = {"<s>", "</s>"};
 *     gw_kv_str_array(g, "tokenizer.ggml.tokens", toks, 2);
 *     int64_t ne[2] = {512, 3};                     // GGUF order: innermost first
 *     size_t t = gw_tensor(g, "blk.0.w", TL_DTYPE_Q4_K, 2, ne);
 *     size_t len;
 *     uint8_t *img = gw_build(g, &len);             // malloc'd image; free() it
 *     uint64_t at = gw_tensor_abs_offset(g, t);     // where its data landed
 *     gw_free(g);
 *
 * Layout written (the one llama.cpp writes and ggml's reader insists on):
 * "GGUF", u32 version, u64 n_tensors, u64 n_kv, the kvs in call order, the
 * tensor infos in call order, zero padding to the alignment, then the data:
 * tensors back to back in call order, each padded to the alignment, offsets
 * starting at 0. Tensor bytes are a deterministic pattern (gw_pattern_byte)
 * unless given with gw_tensor_data. The data section reaches the furthest
 * tensor end (padded), capped at 64 MiB. The counts/offsets fields are always
 * 64-bit (v2/v3 layout) whatever version number is written.
 *
 * Metadata of all 13 GGUF value types: the typed gw_kv_* calls for scalars
 * and strings, gw_kv_array for arrays of fixed-size scalars (elements packed
 * little-endian, bool as 1 byte), gw_kv_str_array for string arrays, and for
 * anything else (nested arrays, deliberately broken values) gw_kv_raw with a
 * value encoded by the gw_buf helpers:
 *
 *     gw_buf v = {0};                        // the array [[7], []] of u32 arrays
 *     gw_buf_u32(&v, TL_META_ARRAY); gw_buf_u64(&v, 2);            // outer header
 *     gw_buf_u32(&v, TL_META_U32); gw_buf_u64(&v, 1); gw_buf_u32(&v, 7);  // [7]
 *     gw_buf_u32(&v, TL_META_U32); gw_buf_u64(&v, 0);              // []
 *     gw_kv_raw(g, "x.nested", TL_META_ARRAY, v.p, v.len);
 *     gw_buf_free(&v);
 *
 * Corruption knobs (all optional): gw_set_magic, gw_set_counts (written counts
 * differ from the real ones), gw_set_layout_alignment (data laid out with an
 * alignment other than the one general.alignment says), gw_tensor_offset
 * (explicit relative offset instead of the packed one), gw_tensor_nbytes
 * (bytes reserved for a tensor, e.g. for unknown type ids), gw_set_tail
 * (extra bytes after the data). Truncation: build, then use a shorter length.
 *
 * Allocation failures abort (test helper). Not thread-safe per builder.
 */
#ifndef TL_TEST_GGUF_WRITER_H
#define TL_TEST_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer, also used to encode raw metadata values. */
typedef struct gw_buf {
    uint8_t *p;
    size_t len, cap;
} gw_buf;

void gw_buf_bytes(gw_buf *b, const void *data, size_t n);
void gw_buf_u8(gw_buf *b, uint8_t v);
void gw_buf_u32(gw_buf *b, uint32_t v);
void gw_buf_u64(gw_buf *b, uint64_t v);
/* A GGUF string: u64 length + bytes. */
void gw_buf_str(gw_buf *b, const char *s);
void gw_buf_strn(gw_buf *b, const char *s, uint64_t n);
void gw_buf_zero(gw_buf *b, size_t n);
void gw_buf_free(gw_buf *b);

typedef struct gw_gguf gw_gguf;

/* A new builder writing this version number (2 or 3 for valid files). */
gw_gguf *gw_new(uint32_t version);
void gw_free(gw_gguf *g);

/* --- metadata, in file order (type ids are GGUF's = tl_meta_type) --- */
void gw_kv_u8(gw_gguf *g, const char *key, uint8_t v);
void gw_kv_i8(gw_gguf *g, const char *key, int8_t v);
void gw_kv_u16(gw_gguf *g, const char *key, uint16_t v);
void gw_kv_i16(gw_gguf *g, const char *key, int16_t v);
/* general.alignment as u32 also becomes the layout alignment (when valid). */
void gw_kv_u32(gw_gguf *g, const char *key, uint32_t v);
void gw_kv_i32(gw_gguf *g, const char *key, int32_t v);
void gw_kv_f32(gw_gguf *g, const char *key, float v);
void gw_kv_bool(gw_gguf *g, const char *key, bool v);
void gw_kv_str(gw_gguf *g, const char *key, const char *v);
void gw_kv_u64(gw_gguf *g, const char *key, uint64_t v);
void gw_kv_i64(gw_gguf *g, const char *key, int64_t v);
void gw_kv_f64(gw_gguf *g, const char *key, double v);
/* Array of n fixed-size scalars of elem_type; elems holds n packed values. */
void gw_kv_array(gw_gguf *g, const char *key, uint32_t elem_type, uint64_t n, const void *elems);
void gw_kv_str_array(gw_gguf *g, const char *key, const char *const *strs, size_t n);
/*
 * Key + u32 type + the raw value bytes exactly as given. For an array the
 * value is: u32 element type, u64 count, elements; a nested array's elements
 * are themselves (u32 type, u64 count, elements). gw_kv_nested_u32 writes
 * one such value: n_outer arrays of u32, inner array k holding k+1 values.
 */
void gw_kv_raw(gw_gguf *g, const char *key, uint32_t type, const void *value, size_t n);
void gw_kv_nested_u32(gw_gguf *g, const char *key, uint32_t n_outer);

/*
 * Add a tensor: ne[0..n_dims) innermost first (GGUF order), ggml type id
 * (a tl_dtype 0..39, or any id for corruption tests). Returns its index.
 * Its data size is computed from type and shape with the tests' own type
 * table (dtype_spec.h; 0 when not computable;
 * override with gw_tensor_nbytes).
 */
size_t gw_tensor(gw_gguf *g, const char *name, uint32_t type, uint32_t n_dims, const int64_t *ne);
/* Explicit offset (relative to the data section) written for tensor i. */
void gw_tensor_offset(gw_gguf *g, size_t i, uint64_t rel_offset);
/* Bytes of data reserved/written for tensor i. */
void gw_tensor_nbytes(gw_gguf *g, size_t i, uint64_t nbytes);
/* Data of tensor i (copied; len bytes, at most its size). */
void gw_tensor_data(gw_gguf *g, size_t i, const void *data, size_t len);

/* --- knobs --- */
void gw_set_magic(gw_gguf *g, const char magic[4]);
/* Written tensor / kv counts (default: the real ones). */
void gw_set_counts(gw_gguf *g, uint64_t n_tensors, uint64_t n_kv);
/* Alignment used to lay out the file, whatever general.alignment says. */
void gw_set_layout_alignment(gw_gguf *g, uint32_t align);
/* n bytes of 0xEE after the data section. */
void gw_set_tail(gw_gguf *g, size_t n);
/* Write no data section at all (header + tensor infos + padding only). */
void gw_set_no_data(gw_gguf *g, bool on);

/* --- output --- */
/* The whole image (malloc'd; caller frees); *len gets its size. */
uint8_t *gw_build(gw_gguf *g, size_t *len);
/* Build and write to path; false on I/O error. */
bool gw_write_file(gw_gguf *g, const char *path);
/* After gw_build: absolute offset of the data section / of tensor i's data. */
uint64_t gw_data_offset(const gw_gguf *g);
uint64_t gw_tensor_abs_offset(const gw_gguf *g, size_t i);
uint64_t gw_tensor_size(const gw_gguf *g, size_t i);
size_t gw_tensor_count(const gw_gguf *g);
/* Byte k of tensor i's default data. */
uint8_t gw_pattern_byte(size_t i, uint64_t k);

#endif
