/*
 * strmap.h — a string -> size_t hash map (open addressing, xxh64), for
 * lookups that must stay linear in the size of hostile inputs (a shard index
 * of a million entries). Keys are borrowed: they must outlive the map.
 */
#ifndef TL_CORE_STRMAP_H
#define TL_CORE_STRMAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tl_strmap {
    const char **keys; /* NULL = empty slot */
    size_t *vals;
    size_t n, cap; /* cap: a power of two, or 0 */
} tl_strmap;

/* The value of key, or false when absent. */
bool tl_strmap_get(const tl_strmap *m, const char *key, size_t *val);
/* Insert or replace; false when out of memory (the map is unchanged). */
bool tl_strmap_put(tl_strmap *m, const char *key, size_t val);
void tl_strmap_free(tl_strmap *m);

#endif
