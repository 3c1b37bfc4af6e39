/*
 * catalog.h — the inside of a tl_model, for the layers that build on the
 * catalog (io/, residency/): files with their descriptors and mappings, the
 * parsed format data, and the tensor table with its sorted name index.
 */
#ifndef TL_MODEL_CATALOG_H
#define TL_MODEL_CATALOG_H

#include "format/format.h"
#include "tierload.h"

typedef struct tl_mfile {
    tl_file_info info; /* info.path is heap-owned */
    int fd;
    void *map; /* the whole file, MAP_PRIVATE */
    tl_fmt_file fmt;
} tl_mfile;

struct tl_model {
    tl_mfile *files;
    size_t n_files;
    tl_tensor_info *tensors; /* names heap-owned, prefixes applied */
    size_t n_tensors;
    uint32_t *by_name;  /* tensor indices sorted by name */
    tl_fmt_meta **meta; /* every file's metadata, file order */
    size_t n_meta;
    unsigned map_flags;
    bool writable;
};

#endif
