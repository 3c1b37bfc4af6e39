/*
 * staging.h — the fixed staging ring: at most `count` buffers of `size`
 * bytes (page aligned, so O_DIRECT can land in them), allocated on first
 * use and never grown. Its bound, count x size, is what tl_load_stats
 * reports as staging_bound.
 */
#ifndef TL_IO_STAGING_H
#define TL_IO_STAGING_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct tl__staging {
    uint64_t size;
    unsigned count;
    unsigned allocated;
    unsigned char **bufs;
    bool *busy;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} tl__staging;

/* Set up an empty ring (no buffers yet); 0 or ENOMEM. */
int tl__staging_init(tl__staging *s, unsigned count, uint64_t size);
/* Take a free buffer (allocating one while under count; waiting otherwise); 0 or errno. */
int tl__staging_take(tl__staging *s, unsigned char **buf);
void tl__staging_give(tl__staging *s, unsigned char *buf);
/* Bytes currently allocated. */
uint64_t tl__staging_used(const tl__staging *s);
void tl__staging_free(tl__staging *s);

#endif
