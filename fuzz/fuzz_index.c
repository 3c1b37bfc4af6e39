/*
 * fuzz_index.c — libFuzzer target: tl__disc_parse_index (shard index JSON)
 * on arbitrary bytes. The callback copies every (tensor, shard) pair, as the
 * real caller does, and checks the promise the parser makes about shard
 * names: not empty, not absolute, no ".." component, no backslash. The
 * input is not NUL-terminated (the parser takes a length).
 */
#include "model/discover.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct pairs {
    char **v;
    size_t n, cap;
    bool stopped;
} pairs;

static bool shard_ok(const char *s) {
    if (!*s || s[0] == '/' || strchr(s, '\\')) return false;
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.') return false;
        if (!e) break;
        p = e + 1;
    }
    return true;
}

static tl_status on_pair(void *ctx, const char *tensor, const char *shard) {
    pairs *ps = ctx;
    if (!tensor || !shard) abort();
    if (!shard_ok(shard)) abort();
    if (ps->n + 2 > ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 16;
        char **v = realloc(ps->v, cap * sizeof *v);
        if (!v) return TL_ERR_NOMEM;
        ps->v = v;
        ps->cap = cap;
    }
    ps->v[ps->n] = strdup(tensor);
    ps->v[ps->n + 1] = strdup(shard);
    if (!ps->v[ps->n] || !ps->v[ps->n + 1]) {
        free(ps->v[ps->n]);
        free(ps->v[ps->n + 1]);
        return TL_ERR_NOMEM;
    }
    ps->n += 2;
    /* an early stop from the callback must be propagated and clean */
    if (strcmp(tensor, "stop") == 0) {
        ps->stopped = true;
        return TL_ERR_CANCELLED;
    }
    return TL_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = malloc(size ? size : 1);
    if (!json) return 0;
    if (size) memcpy(json, data, size);
    pairs ps = {0};
    tl_status st =
        tl__disc_parse_index(json, size, "fuzz/model.safetensors.index.json", on_pair, &ps);
    if (st == TL_OK && ps.n == 0) abort(); /* an empty weight_map is an error */
    if (ps.stopped && st != TL_ERR_CANCELLED) abort();
    for (size_t i = 0; i < ps.n; i++)
        free(ps.v[i]);
    free(ps.v);
    free(json);
    return 0;
}
