/*
 * strmap.h — a string -> size_t hash map (open addressing, xxh64), for
 * lookups that must stay linear in the size of hostile inputs (a shard index
 * of a million entries). Keys are borrowed: they must outlive the map.
 */
#ifndef TL_CORE_STRMAP_H
#define TL_CORE_STRMAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tl__strmap {
    const char **keys; /* NULL = empty slot */
    size_t *vals;
    size_t n, cap; /* cap: a power of two, or 0 */
} tl__strmap;

/* The value of key, or false when absent. */
bool tl__strmap_get(const tl__strmap *m, const char *key, size_t *val);
/* Insert or replace; false when out of memory (the map is unchanged). */
bool tl__strmap_put(tl__strmap *m, const char *key, size_t val);
void tl__strmap_free(tl__strmap *m);

#endif
