/*
 * strmap.c — the string -> size_t hash map of strmap.h: linear probing in a
 * power-of-two table kept at most half full.
 */
#include "core/strmap.h"

#include "os/os.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static size_t slot_of(const tl__strmap *m, const char *key) {
    size_t i = (size_t)XXH64(key, strlen(key), 0) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], key) != 0)
        i = (i + 1) & (m->cap - 1);
    return i;
}

bool tl__strmap_get(const tl__strmap *m, const char *key, size_t *val) {
    if (!m->cap) return false;
    size_t i = slot_of(m, key);
    if (!m->keys[i]) return false;
    *val = m->vals[i];
    return true;
}

static bool grow(tl__strmap *m) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    if (cap < m->cap || cap > SIZE_MAX / sizeof(size_t)) return false;
    tl__strmap g = {tl__os_calloc(cap, sizeof *g.keys), tl__os_calloc(cap, sizeof *g.vals), 0, cap};
    if (!g.keys || !g.vals) {
        free(g.keys);
        free(g.vals);
        return false;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i]) continue;
        size_t j = slot_of(&g, m->keys[i]);
        g.keys[j] = m->keys[i];
        g.vals[j] = m->vals[i];
        g.n++;
    }
    tl__strmap_free(m);
    *m = g;
    return true;
}

bool tl__strmap_put(tl__strmap *m, const char *key, size_t val) {
    if ((m->n + 1) * 2 > m->cap && !grow(m)) return false;
    size_t i = slot_of(m, key);
    if (!m->keys[i]) {
        m->keys[i] = key;
        m->n++;
    }
    m->vals[i] = val;
    return true;
}

void tl__strmap_free(tl__strmap *m) {
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}
