/*
 * discover.h — turning what a user names (a file, a folder, a shard index, a
 * diffusers folder) into the list of model files to open, each with the
 * tensor-name prefix it gets, and the tensors a shard index promises.
 */
#ifndef TL_MODEL_DISCOVER_H
#define TL_MODEL_DISCOVER_H

#include "tierload.h"

#include <stddef.h>

typedef struct tl__disc_file {
    char *path;   /* heap */
    char *prefix; /* heap or NULL: added to every tensor name of the file */
    /*
     * Named by an index or model_index.json (owner): the file must lie inside
     * one of these folders (resolved; heap, or NULL when not confined).
     */
    char *inside[2];
    char *owner;
} tl__disc_file;

/* A promise from a shard index: tensor `name` lives in file `file`. */
typedef struct tl__disc_claim {
    char *name;
    size_t file;
} tl__disc_claim;

typedef struct tl__disc {
    tl__disc_file *files;
    size_t n_files, cap_files;
    tl__disc_claim *claims;
    size_t n_claims, cap_claims;
} tl__disc;

/*
 * Check on the descriptor that was opened (not on the path, which may be
 * re-pointed at any moment) that a confined file lies inside its folders:
 * TL_ERR_FORMAT naming the owner, the file and where it resolves otherwise.
 */
tl_status tl__disc_check_opened(const tl__disc_file *f, int fd);

/* Expand one user path into d (appending), with an optional extra prefix. */
tl_status tl__disc_add(tl__disc *d, const char *path, const char *prefix);
void tl__disc_free(tl__disc *d);

/*
 * Parse a shard index's JSON text: for each weight_map entry call back with
 * (tensor, shard file name as written). Shard names are validated: no
 * absolute paths, no ".." components, no backslashes, not empty.
 * Exposed for the fuzzers.
 */
tl_status tl__disc_parse_index(const char *json, size_t len, const char *index_path,
                              tl_status (*cb)(void *ctx, const char *tensor, const char *shard),
                              void *ctx);

#endif
