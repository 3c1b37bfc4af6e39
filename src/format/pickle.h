/*
 * pickle.h — a Python pickle reader that runs nothing: a small virtual
 * machine over the protocol-2 opcodes torch.save emits, building plain
 * values (None, bool, int, float, str, bytes, tuple, list, dict) and the two
 * torch objects a checkpoint holds (storages named by persistent ids, and
 * tensors rebuilt from them). Globals are looked up in a fixed allow-list;
 * any other global refuses the pickle with its name. Memory, stack, memo and
 * mark depth are bounded.
 */
#ifndef TL_FORMAT_PICKLE_H
#define TL_FORMAT_PICKLE_H

#include "tierload.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum tl__pk_kind {
    TL_PK_NONE,
    TL_PK_BOOL,
    TL_PK_INT,
    TL_PK_FLOAT,
    TL_PK_STR,
    TL_PK_BYTES,
    TL_PK_TUPLE,
    TL_PK_LIST,
    TL_PK_DICT, /* items hold key, value, key, value, ... */
    TL_PK_GLOBAL,
    TL_PK_STORAGE,
    TL_PK_TENSOR,
} tl__pk_kind;

typedef struct tl__pk_storage {
    tl_dtype dtype;
    const char *type_name; /* "FloatStorage" */
    const char *key;       /* into the pickle, not NUL-terminated */
    uint64_t key_len;
    uint64_t numel;
} tl__pk_storage;

typedef struct tl__pk_tensor {
    const tl__pk_storage *storage;
    uint64_t storage_offset; /* elements */
    uint32_t n_dims;
    int64_t shape[TL_MAX_DIMS];
    int64_t stride[TL_MAX_DIMS]; /* elements */
} tl__pk_tensor;

typedef struct tl__pk_value tl__pk_value;
struct tl__pk_value {
    tl__pk_kind kind;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *p; /* into the pickle (str, bytes) */
            uint64_t n;
        } s;
        struct {
            tl__pk_value **items;
            size_t n, cap;
        } seq;
        int global; /* internal id of an allowed global */
        tl__pk_storage *storage;
        tl__pk_tensor *tensor;
    } u;
};

typedef struct tl__pk_arena tl__pk_arena;

/* Run the pickle; *root and everything it reaches live in *arena until tl__pk_free. */
tl_status tl__pk_run(const uint8_t *data, uint64_t size, const char *path, tl__pk_value **root,
                    tl__pk_arena **arena);
void tl__pk_free(tl__pk_arena *arena);

/* A short name of a value's kind ("dict", "tensor", ...) for messages. */
const char *tl__pk_kind_name(tl__pk_kind k);

#endif
