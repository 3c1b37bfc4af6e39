/*
 * pool.h — device memory as a few large buffers (chunks), sub-allocated
 * first fit (pool.c). Bookkeeping only: the caller makes and frees the
 * chunks' buffers and serialises calls.
 */
#ifndef TL_DEVICES_POOL_H
#define TL_DEVICES_POOL_H

#include "tierload.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tl__pool_range {
    uint64_t off, len;
} tl__pool_range;

typedef struct tl__pool_chunk {
    void *buf;   /* the caller's buffer (e.g. ggml_backend_buffer_t) */
    char *base;  /* its base address as the backend gives it */
    uint64_t size;
    tl_devptr p0; /* handle of its first byte */
    tl__pool_range *a; /* live allocations, sorted by offset */
    size_t n, cap;
    uint64_t used;
} tl__pool_chunk;

typedef struct tl__pool {
    tl__pool_chunk *c; /* sorted by p0 */
    size_t n, cap;
    uint64_t align;
    uint64_t total; /* bytes of all chunks: what the device holds */
    uint64_t used;  /* bytes allocated from them */
} tl__pool;

void tl__pool_init(tl__pool *pl, uint64_t align);
/* Forget every chunk (the caller has freed their buffers). */
void tl__pool_free(tl__pool *pl);
/* Carve size bytes: 0 and *out, 1 when no chunk has room, -1 out of host memory. */
int tl__pool_take(tl__pool *pl, uint64_t size, tl_devptr *out);
/* A new chunk of size bytes whose handles start at p0 (0, or -1 out of host memory). */
int tl__pool_add_chunk(tl__pool *pl, void *buf, char *base, uint64_t size, tl_devptr p0);
/* Return the allocation starting at p: its size, or -1 when p starts none. */
int64_t tl__pool_give(tl__pool *pl, tl_devptr p);
/*
 * The chunk buffer and address of [p, p+n) when it lies inside one live
 * allocation; *room (may be NULL) = bytes from p to that allocation's end.
 */
bool tl__pool_find(const tl__pool *pl, tl_devptr p, uint64_t n, void **buf, void **addr,
                   uint64_t *room);
/* Drop up to cap empty chunks: their buffers go to bufs for the caller to free; the count. */
size_t tl__pool_trim(tl__pool *pl, void **bufs, size_t cap);

#endif
