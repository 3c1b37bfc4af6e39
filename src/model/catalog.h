/*
 * catalog.h — the inside of a tl_model, for the layers that build on the
 * catalog (io/, residency/): files with their descriptors and mappings, the
 * parsed format data, and the tensor table with its sorted name index.
 */
#ifndef TL_MODEL_CATALOG_H
#define TL_MODEL_CATALOG_H

#include "format/format.h"
#include "os/os.h"
#include "tierload.h"

typedef struct tl__mfile {
    tl_file_info info; /* info.path is heap-owned */
    int fd;
    void *map; /* the whole file, MAP_PRIVATE */
    tl__fmt_file fmt;
    tl__os_stamp stamp;  /* taken when opened */
} tl__mfile;

/* The (component, layer) -> tensors grouping (model/group.c). */
typedef struct tl__model_groups {
    size_t *index;                     /* every tensor once: by component, layer, then other */
    size_t *tensor_layer;              /* per tensor: its layer number, TL_NOT_FOUND for other */
    size_t n_layers[TL_COMP_COUNT];    /* layers per component */
    size_t *layer_off[TL_COMP_COUNT];  /* n_layers + 2 offsets into index; [n_layers] = other */
    const char **layer_key[TL_COMP_COUNT]; /* per layer its key, into key_text */
    char *key_text;                        /* the keys, NUL-terminated */
} tl__model_groups;

tl_status tl__model_groups_build(tl_model *m);
void tl__model_groups_free(tl__model_groups *g);

/* Component rules of tl_model_options.components (model/comprules.c). */
typedef struct tl__comp_rules {
    struct {
        const char *prefix; /* into text */
        tl_component comp;
    } *rule;
    size_t n;
    char *text;
} tl__comp_rules;

/* Parse "PREFIX=COMPONENT,..." (NULL or "" = no rules); errors name the rule. */
tl_status tl__comp_rules_parse(const char *spec, tl__comp_rules *out);
/* The component of the first rule whose prefix starts name; TL_COMP_INVALID when none. */
tl_component tl__comp_rules_match(const tl__comp_rules *r, const char *name);
void tl__comp_rules_free(tl__comp_rules *r);

struct tl_model {
    tl__mfile *files;
    size_t n_files;
    tl_tensor_info *tensors; /* names heap-owned, prefixes applied */
    size_t n_tensors;
    uint32_t *by_name;  /* tensor indices sorted by name */
    tl__fmt_meta **meta; /* every file's metadata, file order */
    size_t n_meta;
    unsigned map_flags;
    bool writable;
    tl__model_groups groups;
    _Atomic unsigned char *dirty; /* per tensor: 1 once patched through its mutable pointer */
};

#endif
