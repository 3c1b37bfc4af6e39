/*
 * dtype_spec.h — element sizes of every tensor type, written in the tests
 * from the formats' own definitions (ggml's block structs in ggml-common.h as
 * the GGUF spec refers to them, and the safetensors dtype list), not read from
 * the library. The test writers size tensors with it, and test_dtype_table
 * compares it with tl_dtype_block_elems / tl_dtype_block_bits / tl_dtype_nbytes.
 */
#ifndef TL_TEST_DTYPE_SPEC_H
#define TL_TEST_DTYPE_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tu_dtype_spec {
    int id;               /* ggml type id, or tierload's id (100+) for safetensors-only types */
    const char *name;     /* GGUF / safetensors name */
    uint32_t block_elems; /* elements per block */
    uint32_t block_bits;  /* bits per block */
} tu_dtype_spec;

/* The whole table (n rows). */
const tu_dtype_spec *tu_dtype_specs(size_t *n);
/* Row of a type id or name; NULL when unknown. */
const tu_dtype_spec *tu_dtype_spec_of(int id);
const tu_dtype_spec *tu_dtype_spec_named(const char *name);
/* Bytes of n elements: false when unknown, not whole blocks, not whole bytes, or overflowing. */
bool tu_dtype_nbytes(const tu_dtype_spec *s, uint64_t n, uint64_t *out);

#endif
