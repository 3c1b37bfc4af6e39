/*
 * format.h — parsers from a file's bytes to catalog entries.
 *
 * A parser reads a whole file image (its mapping) and its path (for
 * messages), trusts nothing in it, and fills a tl__fmt_file: tensors with
 * absolute offsets and exact sizes, metadata entries, and the file-level
 * facts (version, data offset, alignment). Parsers are pure: no I/O, no
 * devices; that is what lets the fuzzers drive them directly.
 */
#ifndef TL_FORMAT_FORMAT_H
#define TL_FORMAT_FORMAT_H

#include "tierload.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Limits the parsers enforce (and the writer, so that what it writes can be
 * read back): counts beyond any real model (the largest have ~10^5 tensors and
 * ~10^3 keys; a hostile file of minimal 24-byte tensor infos would otherwise
 * make the catalog several times the file's size in memory), ggml's dimension
 * limit, and the safetensors header size the reference reader accepts.
 */
#define TL_GGUF_MAX_TENSORS (1ull << 24)
#define TL_GGUF_MAX_KV (1ull << 20)
#define TL_GGUF_MAX_DIMS 4
#define TL_ST_MAX_HEADER 100000000ull

typedef struct tl__fmt_tensor {
    char *name; /* heap, NUL-terminated */
    tl_dtype dtype;
    uint32_t n_dims;
    int64_t shape[TL_MAX_DIMS]; /* outermost first */
    uint64_t n_elements;
    uint64_t offset;  /* absolute */
    uint64_t nbytes;  /* n_elements x element size, also for strided tensors */
    int64_t *strides; /* heap, TL_MAX_DIMS entries; NULL when contiguous */
} tl__fmt_tensor;

/* A metadata entry; strings point into the file image or into arena-owned memory. */
typedef struct tl__fmt_meta {
    tl_meta m;           /* key is heap-owned (freed with the file) */
    const uint8_t *data; /* arrays: first element in the image */
    uint64_t *str_offs;  /* arrays of strings: offset of each element from data (heap) */
    char *owned;         /* heap copy of a string value, when not in the image */
} tl__fmt_meta;

typedef struct tl__fmt_file {
    tl_format format;
    int32_t version;
    uint64_t size;
    uint64_t data_offset;
    uint32_t alignment;
    tl__fmt_tensor *tensors;
    size_t n_tensors;
    tl__fmt_meta *meta;
    size_t n_meta;
} tl__fmt_file;

/* Which format do these first bytes look like? -1 when none. */
int tl__fmt_sniff(const uint8_t *data, uint64_t size);

/* Parse a GGUF v2/v3 image. On failure *out is left empty (nothing to free). */
tl_status tl__gguf_parse(const uint8_t *data, uint64_t size, const char *path, tl__fmt_file *out);
/* Parse a safetensors image. On failure *out is left empty. */
tl_status tl__safetensors_parse(const uint8_t *data, uint64_t size, const char *path,
                               tl__fmt_file *out);
/*
 * Parse a PyTorch checkpoint (torch.save's zip format) without running its
 * pickle. On failure *out is left empty.
 */
tl_status tl__ckpt_parse(const uint8_t *data, uint64_t size, const char *path, tl__fmt_file *out);
/* The same where data maps the file fd holds: the zip's local headers (one per storage) are read
 * with pread rather than faulted in through the mapping one page each (tl__zip_open_fd). */
tl_status tl__ckpt_parse_fd(const uint8_t *data, uint64_t size, int fd, const char *path,
                            tl__fmt_file *out);
/* Free what a successful parse allocated. */
void tl__fmt_file_free(tl__fmt_file *f);

/* Fill a tensor's element count and byte size from dtype and shape; false + message on error. */
tl_status tl__fmt_tensor_size(tl__fmt_tensor *t, const char *path);

/*
 * Shared by both formats: reject duplicate metadata keys and tensor names,
 * and (when check_overlap) tensors whose byte ranges overlap.
 */
tl_status tl__fmt_check_unique(const tl__fmt_file *f, const char *path, bool check_overlap);

/* Read element j of a metadata array (for tl_model_meta_element). */
tl_status tl__fmt_meta_array_get(const tl__fmt_meta *fm, uint64_t j, tl_meta *out);

#endif
